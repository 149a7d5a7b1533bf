//! `neural-style fetch-model`: downloads VGG weights into torch.hub's cache, verified by the
//! sha256 prefix in the file name (torch.hub's own convention), written via temp file + rename.

use crate::model::source::hash_prefix_of;
use anyhow::{anyhow, bail, ensure, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use sha2::{Digest, Sha256};
use std::fs;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

/// Last path segment of a URL, without query or fragment.
pub fn url_file_name(url: &str) -> Option<&str> {
    let path = url.split(['?', '#']).next()?;
    let name = path.rsplit('/').next()?;
    let is_file_name = !name.is_empty() && name != "." && name != "..";
    (is_file_name && path.contains("://") && path.matches('/').count() >= 3).then_some(name)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// sha256 of a file, as lowercase hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = crate::image_io::open_input(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex(&h.finalize()))
}

/// Downloads `url` to `dest`. The file appears at `dest` only once complete and verified.
/// `show_progress` draws a progress bar on stderr.
pub fn fetch(url: &str, dest: &Path, show_progress: bool) -> Result<()> {
    let name = url_file_name(url).ok_or_else(|| anyhow!("'{url}' is not a URL of a file (expected http(s)://host/.../NAME)"))?;
    let expected = hash_prefix_of(name).map(str::to_ascii_lowercase);
    if expected.is_none() {
        eprintln!("note: '{name}' carries no sha256 prefix in its name, so the download cannot be verified");
    }
    if dest.is_file() {
        match &expected {
            Some(prefix) if sha256_file(dest)?.starts_with(prefix.as_str()) => {
                eprintln!("{} is already there and its sha256 matches; nothing to do", dest.display());
                return Ok(());
            }
            Some(_) => eprintln!("{} exists but its sha256 does not match; downloading again", dest.display()),
            None => {
                eprintln!("{} is already there; nothing to do", dest.display());
                return Ok(());
            }
        }
    }
    ensure!(!dest.is_dir(), "{}: the destination is a folder; name the file (e.g. {})", dest.display(), dest.join(name).display());
    let dir = dest.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    // Folders made here go again if the download fails: a failed fetch leaves nothing behind.
    let created: Vec<PathBuf> = dir.ancestors().take_while(|d| !d.as_os_str().is_empty() && !d.exists()).map(Path::to_path_buf).collect();
    fs::create_dir_all(dir).with_context(|| format!("{}: cannot create the folder", dir.display()))?;
    let result = download(url, name, dest, expected.as_deref(), show_progress);
    if result.is_err() {
        for d in &created {
            let _ = fs::remove_dir(d); // innermost first; only ever empty folders
        }
    }
    result
}

/// The download itself, into a temp file beside `dest` that is renamed over it once verified
/// and removed on any failure.
fn download(url: &str, name: &str, dest: &Path, expected: Option<&str>, show_progress: bool) -> Result<()> {
    // The temp file first: a --dest that cannot be written is found before the download.
    let tmp = crate::image_io::temp_path_for(dest);
    let file = fs::File::create(&tmp).map_err(|e| anyhow!("{}: --dest cannot be written there ({e}; tried to create {})", dest.display(), tmp.display()))?;
    let mut response = match ureq::get(url).call() {
        Ok(r) => r,
        Err(e) => {
            drop(file);
            let _ = fs::remove_file(&tmp);
            bail!("download of {url} failed: {e}");
        }
    };
    let total = response.body().content_length();
    let bar = if show_progress { ProgressBar::new(total.unwrap_or(0)) } else { ProgressBar::hidden() };
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_message(name.to_string());

    let result = (|| -> Result<String> {
        let mut reader = response.body_mut().as_reader();
        let mut out = BufWriter::new(file);
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 16];
        let mut got = 0u64;
        loop {
            let n = reader.read(&mut buf).map_err(|e| anyhow!("download of {url} broke off after {got} bytes: {e}"))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            out.write_all(&buf[..n])?;
            got += n as u64;
            bar.set_position(got);
        }
        if let Some(t) = total {
            if got != t {
                bail!("download of {url} ended after {got} of {t} bytes");
            }
        }
        out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        Ok(hex(&hasher.finalize()))
    })();
    bar.finish_and_clear();
    let verified = result.and_then(|digest| match expected {
        Some(prefix) if !digest.starts_with(prefix) => {
            bail!("sha256 of the download is {digest}, which does not start with '{prefix}' as its name '{name}' says; nothing was kept")
        }
        _ => Ok(digest),
    });
    let saved = verified.and_then(|digest| {
        fs::rename(&tmp, dest).with_context(|| format!("{}: cannot write", dest.display()))?;
        Ok(digest)
    });
    match saved {
        Ok(digest) => {
            eprintln!("saved {} (sha256 {digest})", dest.display());
            Ok(())
        }
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// Where fetch-model puts a file by default: torch.hub's checkpoint folder.
pub fn default_dest(url: &str) -> Result<PathBuf> {
    let name = url_file_name(url).ok_or_else(|| anyhow!("'{url}' is not a URL of a file"))?;
    let dir = crate::model::source::torch_checkpoints_dir()
        .ok_or_else(|| anyhow!("cannot find the torch cache folder: set TORCH_HOME or HOME, or pass --dest"))?;
    Ok(dir.join(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_of_urls() {
        assert_eq!(url_file_name("https://download.pytorch.org/models/vgg19-dcbb9e9d.pth"), Some("vgg19-dcbb9e9d.pth"));
        assert_eq!(url_file_name("http://127.0.0.1:80/a-01234567.pth?x=1"), Some("a-01234567.pth"));
        assert_eq!(url_file_name("http://host/"), None);
        assert_eq!(url_file_name("vgg.pth"), None);
        assert_eq!(url_file_name("http://host/models/.."), None);
        assert_eq!(url_file_name("http://host/models/."), None);
    }
}
