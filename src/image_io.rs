//! Image files in and out: 8-bit RGB `(h, w, 3)` at the edges of the program.
//!
//! Loading accepts whatever the `image` crate decodes with the png and jpeg features (the format
//! is sniffed from the bytes, not the name); grayscale becomes RGB and alpha is composited over
//! white, so a transparent background does not turn into whatever colour hides under it.
//! Saving picks the format from the extension and is atomic (temp file + rename).

use anyhow::{anyhow, bail, ensure, Context, Result};
use image::imageops::FilterType;
use image::metadata::Orientation;
use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, RgbImage};
use std::fs;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

/// An 8-bit RGB image, row-major `(h, w, 3)`.
#[derive(Clone, Debug, PartialEq)]
pub struct Rgb8 {
    pub w: usize,
    pub h: usize,
    pub data: Vec<u8>,
}

impl Rgb8 {
    fn from_image(img: RgbImage) -> Rgb8 {
        Rgb8 { w: img.width() as usize, h: img.height() as usize, data: img.into_raw() }
    }
    fn to_image(&self) -> RgbImage {
        RgbImage::from_raw(self.w as u32, self.h as u32, self.data.clone()).expect("buffer matches its size")
    }
}

/// Output formats, chosen by file extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutFormat {
    Png,
    Jpeg,
}

/// The format a path's extension asks for; unknown extensions are an error (checked before any work).
pub fn out_format(path: &Path) -> Result<OutFormat> {
    let ext = path.extension().and_then(|e| e.to_str()).map(|e| e.to_ascii_lowercase());
    match ext.as_deref() {
        Some("png") => Ok(OutFormat::Png),
        Some("jpg") | Some("jpeg") => Ok(OutFormat::Jpeg),
        Some(e) => bail!("{}: unsupported output extension '.{e}' (use .png, .jpg or .jpeg)", path.display()),
        None => bail!("{}: the output file needs an extension (.png, .jpg or .jpeg)", path.display()),
    }
}

/// The most pixels decoded whole (8192², 192 MiB as RGB). A PNG larger than that, or larger
/// than the caller needs, is reduced while it is read, row by row; a larger JPEG or interlaced
/// PNG is refused (their decoders have no reduced decode).
pub const MAX_WHOLE_PIXELS: u64 = 1 << 26;
/// The most pixels a PNG may declare when it is reduced as it is read (1 Gpx: they are read, not
/// kept, but reading them takes time).
pub const MAX_STREAMED_PIXELS: u64 = 1 << 30;

/// Reads an image file as RGB (grayscale expanded, alpha composited over white), turned upright
/// as its EXIF orientation says. A JPEG cut short is refused (decoders fill the missing part
/// with grey instead of failing).
pub fn load(path: &Path) -> Result<Rgb8> {
    Ok(load_for(path, |size| size)?.0)
}

/// As `load`, for a caller that will resize the image to `keep(source size)`: a PNG much larger
/// than that is reduced by a whole factor while it is read (each output pixel the mean of a
/// k x k block), keeping at least twice `keep` per side for the final resize, so that memory
/// follows the size needed rather than the file's. Returns the image and its source size
/// (upright), from which the caller computes its target exactly as for a full decode.
pub fn load_for(path: &Path, keep: impl FnOnce((usize, usize)) -> (usize, usize)) -> Result<(Rgb8, (usize, usize))> {
    let bytes = read_input(path, MAX_IMAGE_FILE_BYTES)?;
    decode(&bytes, &path.display().to_string(), keep)
}

/// The largest image file read (1 GiB): a PNG of the 2^30 pixels `decode` accepts compresses
/// far below it; anything larger is not an image this program can use.
pub const MAX_IMAGE_FILE_BYTES: u64 = 1 << 30;

/// Opens an input file, refusing what is not a regular file once links are followed: a FIFO
/// would block the open (or the read) for ever, and a device such as /dev/zero never ends.
/// Errors name `path`.
pub fn open_input(path: &Path) -> Result<fs::File> {
    open_regular(path).map_err(|e| anyhow!("{}: {e}", path.display()))
}

/// `open_input` with errors that do not name the path (for callers that prefix it themselves).
pub fn open_regular(path: &Path) -> Result<fs::File> {
    let meta = fs::metadata(path).map_err(|e| anyhow!("cannot open: {}", io_reason(&e)))?;
    if meta.is_dir() {
        bail!("a folder, not a file");
    }
    if !meta.is_file() {
        bail!("not a regular file (a FIFO, socket or device): give a file");
    }
    fs::File::open(path).map_err(|e| anyhow!("cannot open: {}", io_reason(&e)))
}

/// The bytes of the input file `path` (see `open_input`), refusing one of more than `limit`
/// bytes before reading it (and, should it grow meanwhile, after reading `limit + 1`).
pub fn read_input(path: &Path, limit: u64) -> Result<Vec<u8>> {
    let file = open_input(path)?;
    let too_large = || anyhow!("{}: the file is larger than the {} this program reads", path.display(), crate::memory::human_bytes(limit));
    if file.metadata().map(|m| m.len()).unwrap_or(0) > limit {
        return Err(too_large());
    }
    let mut bytes = Vec::new();
    file.take(limit + 1).read_to_end(&mut bytes).map_err(|e| anyhow!("{}: cannot read: {}", path.display(), io_reason(&e)))?;
    if bytes.len() as u64 > limit {
        return Err(too_large());
    }
    Ok(bytes)
}

/// `load_for` on bytes already read; `name` names the image in errors.
pub fn decode(bytes: &[u8], name: &str, keep: impl FnOnce((usize, usize)) -> (usize, usize)) -> Result<(Rgb8, (usize, usize))> {
    let reader = ImageReader::new(std::io::Cursor::new(bytes)).with_guessed_format().map_err(|e| anyhow!("{name}: cannot read: {e}"))?;
    let format = reader.format();
    match format {
        Some(ImageFormat::Png) | Some(ImageFormat::Jpeg) => {}
        _ => bail!("{name}: not a PNG or JPEG image"),
    }
    if format == Some(ImageFormat::Jpeg) && !jpeg_is_complete(bytes) {
        bail!("{name}: the JPEG is truncated (no end-of-image marker after its image data)");
    }
    let mut decoder = reader.into_decoder().map_err(|e| anyhow!("{name}: cannot decode image: {e}"))?;
    let (w, h) = decoder.dimensions();
    ensure!(w > 0 && h > 0, "{name}: the image is empty");
    let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
    let turned = matches!(orientation, Orientation::Rotate90 | Orientation::Rotate270 | Orientation::Rotate90FlipH | Orientation::Rotate270FlipH);
    let source = if turned { (h as usize, w as usize) } else { (w as usize, h as usize) };
    let (kw, kh) = keep(source);
    // The largest whole factor that keeps at least twice the size needed on both sides.
    let factor = (source.0 / (2 * kw.max(1))).min(source.1 / (2 * kh.max(1))).max(1);
    let pixels = w as u64 * h as u64;
    if format == Some(ImageFormat::Png) && !png_is_interlaced(bytes) && (factor > 1 || pixels > MAX_WHOLE_PIXELS) {
        ensure!(
            pixels <= MAX_STREAMED_PIXELS,
            "{name}: the PNG declares {w}x{h} pixels, more than the {} million this program reads",
            MAX_STREAMED_PIXELS >> 20
        );
        let factor = reduction_factor(factor, pixels);
        let mut img = DynamicImage::ImageRgb8(png_reduced(bytes, factor).with_context(|| format!("{name}: cannot decode image"))?);
        img.apply_orientation(orientation);
        return Ok((Rgb8::from_image(img.into_rgb8()), source));
    }
    ensure!(
        pixels <= MAX_WHOLE_PIXELS,
        "{name}: the image declares {w}x{h} pixels, more than the {} million this program decodes whole; give a smaller JPEG (or a PNG, which is reduced as it is read)",
        MAX_WHOLE_PIXELS >> 20
    );
    // A backstop for what the decoder allocates beyond the image itself.
    let mut limits = image::Limits::default();
    limits.max_alloc = Some(4 * MAX_WHOLE_PIXELS * 4);
    decoder.set_limits(limits).map_err(|e| anyhow!("{name}: cannot decode image: {e}"))?;
    let mut img = DynamicImage::from_decoder(decoder).map_err(|e| anyhow!("{name}: cannot decode image: {e}"))?;
    img.apply_orientation(orientation);
    Ok((Rgb8::from_image(to_rgb_over_white(img)), source))
}

/// Most pixels of a PNG reduced as it is read (4096²): 12 bytes each while it is summed.
const MAX_REDUCED_PIXELS: u64 = 1 << 24;

/// The whole factor a PNG of `pixels` is reduced by: `wanted` (from the size needed), raised so
/// that the reduced image has at most MAX_REDUCED_PIXELS, and at most 4096 so that a block's
/// sum (255 · factor²) fits a u32.
fn reduction_factor(wanted: usize, pixels: u64) -> usize {
    let mut factor = wanted.clamp(1, 4096) as u64;
    while pixels.div_ceil(factor * factor) > MAX_REDUCED_PIXELS {
        factor += 1;
    }
    factor as usize
}

/// Decodes a PNG row by row into RGB reduced by `factor`: each output pixel is the rounded mean
/// of the (up to) factor x factor source pixels it covers, alpha composited over white first.
/// Memory: one row and the reduced image, whatever the PNG's size. Not for interlaced PNGs.
fn png_reduced(bytes: &[u8], factor: usize) -> Result<RgbImage> {
    let mut decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    decoder.set_transformations(png::Transformations::normalize_to_color8());
    let mut reader = decoder.read_info()?;
    let (w, h) = (reader.info().width as usize, reader.info().height as usize);
    let channels = reader.output_color_type().0.samples();
    let (rw, rh) = (w.div_ceil(factor), h.div_ceil(factor));
    // Per output pixel: summed R, G, B (at most 255 · 4096² each: a u32 holds it).
    let mut sums = vec![0u32; rw * rh * 3];
    let mut y = 0;
    while let Some(row) = reader.next_row()? {
        let base = (y / factor) * rw;
        for (x, px) in row.data().chunks_exact(channels).take(w).enumerate() {
            let rgb = over_white(px);
            let s = &mut sums[(base + x / factor) * 3..][..3];
            for c in 0..3 {
                s[c] += rgb[c] as u32;
            }
        }
        y += 1;
        if y == h {
            break;
        }
    }
    // A block's pixel count: factor², less at the right and bottom edges.
    let extent = |b: usize, n: usize| ((b + 1) * factor).min(n) - b * factor;
    let data = sums.chunks_exact(3).enumerate().flat_map(|(i, s)| {
        let n = (extent(i % rw, w) * extent(i / rw, h)) as u32;
        [0, 1, 2].map(|c| ((s[c] + n / 2) / n) as u8)
    });
    Ok(RgbImage::from_raw(rw as u32, rh as u32, data.collect()).expect("buffer matches its size"))
}

/// IHDR's interlace method byte (the last of its 13): Adam7 rows arrive pass by pass.
fn png_is_interlaced(bytes: &[u8]) -> bool {
    bytes.get(28).is_some_and(|&m| m != 0)
}

/// One 8-bit pixel of 1-4 samples (gray, gray+alpha, RGB, RGBA) as RGB over white, rounded as
/// `to_rgb_over_white` does.
fn over_white(px: &[u8]) -> [u8; 3] {
    let (rgb, a) = match *px {
        [g] => ([g; 3], 255),
        [g, a] => ([g; 3], a),
        [r, g, b] => ([r, g, b], 255),
        [r, g, b, a, ..] => ([r, g, b], a),
        [] => ([255; 3], 255),
    };
    let a = a as u32;
    rgb.map(|c| ((c as u32 * a + 255 * (255 - a) + 127) / 255) as u8)
}

/// A JPEG's entropy-coded data ends with an end-of-image marker (FF D9). Inside that data a
/// 0xFF byte is always followed by 0x00 or a restart marker, so an FF D9 after the first
/// start-of-scan (FF DA) can only be the real end: a file cut short has none.
fn jpeg_is_complete(bytes: &[u8]) -> bool {
    let Some(sos) = bytes.windows(2).position(|w| w == [0xFF, 0xDA]) else { return false };
    bytes[sos..].windows(2).any(|w| w == [0xFF, 0xD9])
}

fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => e.to_string(),
    }
}

fn to_rgb_over_white(img: DynamicImage) -> RgbImage {
    if !img.color().has_alpha() {
        return img.into_rgb8();
    }
    let rgba = img.into_rgba8();
    let mut out = RgbImage::new(rgba.width(), rgba.height());
    for (o, p) in out.pixels_mut().zip(rgba.pixels()) {
        o.0 = over_white(&p.0);
    }
    out
}

/// The size whose longer side is `max_side`, keeping the aspect ratio (each side at least 1).
pub fn fit_size(w: usize, h: usize, max_side: usize) -> (usize, usize) {
    if w >= h {
        (max_side, ((h as f64 * max_side as f64 / w as f64).round() as usize).max(1))
    } else {
        (((w as f64 * max_side as f64 / h as f64).round() as usize).max(1), max_side)
    }
}

/// Scales so that the longer side is `max_side` (up or down, as jcjohnson/neural-style does);
/// an image already that size is returned unchanged. Lanczos3 keeps edges sharp when shrinking.
pub fn resize_max_side(img: Rgb8, max_side: usize) -> Rgb8 {
    let size = fit_size(img.w, img.h, max_side);
    resize_exact(img, size)
}

/// Resizes to exactly `(w, h)`; unchanged when it already has that size.
pub fn resize_exact(img: Rgb8, (w, h): (usize, usize)) -> Rgb8 {
    if (img.w, img.h) == (w, h) {
        return img;
    }
    Rgb8::from_image(image::imageops::resize(&img.to_image(), w as u32, h as u32, FilterType::Lanczos3))
}

/// Writes `img` to `path` in the format its extension names, through a temp file in the same
/// directory renamed into place, so an interrupted run never leaves half an image behind.
pub fn save(img: &Rgb8, path: &Path) -> Result<()> {
    save_with_text(img, path, &[])
}

/// As `save`, with UTF-8 text chunks (iTXt, keyword and text) in a PNG; JPEG has none (the
/// texts are dropped).
pub fn save_with_text(img: &Rgb8, path: &Path, texts: &[(&str, &str)]) -> Result<()> {
    let format = out_format(path)?;
    let mut bytes = Vec::new();
    let rgb = img.to_image();
    match format {
        OutFormat::Png if !texts.is_empty() => {
            let mut enc = png::Encoder::new(&mut bytes, img.w as u32, img.h as u32);
            enc.set_color(png::ColorType::Rgb);
            enc.set_depth(png::BitDepth::Eight);
            for (key, text) in texts {
                enc.add_itxt_chunk(key.to_string(), text.to_string())?;
            }
            let mut w = enc.write_header()?;
            w.write_image_data(&img.data)?;
            w.finish()?;
        }
        OutFormat::Png => rgb.write_to(&mut std::io::Cursor::new(&mut bytes), ImageFormat::Png)?,
        OutFormat::Jpeg => {
            let enc = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 95);
            rgb.write_with_encoder(enc)?
        }
    }
    write_atomic(path, &bytes)
}

/// The text chunks (tEXt, zTXt and iTXt) of a PNG file, as (keyword, text).
pub fn read_png_text(path: &Path) -> Result<Vec<(String, String)>> {
    let file = open_input(path)?;
    let mut decoder = png::Decoder::new(std::io::BufReader::new(file));
    decoder.set_ignore_text_chunk(false);
    let reader = decoder.read_info().with_context(|| format!("{}: not a readable PNG", path.display()))?;
    let info = reader.info();
    let mut out: Vec<(String, String)> = info.uncompressed_latin1_text.iter().map(|t| (t.keyword.clone(), t.text.clone())).collect();
    for t in &info.compressed_latin1_text {
        out.push((t.keyword.clone(), t.get_text().map_err(|e| anyhow::anyhow!("{}: a damaged zTXt chunk: {e}", path.display()))?));
    }
    for t in &info.utf8_text {
        out.push((t.keyword.clone(), t.get_text().map_err(|e| anyhow::anyhow!("{}: a damaged iTXt chunk: {e}", path.display()))?));
    }
    Ok(out)
}

/// A temp path beside `path` (same directory, so the rename cannot cross file systems), named
/// after this host and process: two batch tasks writing one frame on shared storage (a double
/// submission) may run on two machines with the same process id, and must not share a temp file.
pub fn temp_path_for(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".{name}.{}.{}.tmp", host_name(), std::process::id()))
}

/// This machine's name as a file-name part ('/' and other odd characters replaced), or `host`.
fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into the buffer it is given.
    let ok = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0;
    let raw = if ok { String::from_utf8_lossy(&buf[..buf.iter().position(|&b| b == 0).unwrap_or(buf.len())]).into_owned() } else { String::new() };
    let clean: String = raw.chars().take(64).map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '.' { c } else { '_' }).collect();
    if clean.is_empty() { "host".into() } else { clean }
}

/// Writes bytes to a temp file beside `path`, syncs it, then renames it over `path`. The temp
/// file is removed on every error, and a second SIGINT / SIGTERM waits for the write to end
/// (`interrupt::writing`), so none is left behind.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let _writing = crate::interrupt::writing();
    let tmp = temp_path_for(path);
    let result = (|| -> Result<()> {
        let mut f = BufWriter::new(fs::File::create(&tmp)?);
        f.write_all(bytes)?;
        f.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        fs::rename(&tmp, path)?;
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.with_context(|| format!("{}: cannot write", path.display()))
}

/// `<stem>_<iteration>.<ext>` beside `path`, for intermediate results.
pub fn iteration_path(path: &Path, iteration: usize) -> PathBuf {
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    match path.extension() {
        Some(ext) => path.with_file_name(format!("{stem}_{iteration}.{}", ext.to_string_lossy())),
        None => path.with_file_name(format!("{stem}_{iteration}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gradient(w: usize, h: usize) -> Rgb8 {
        let data = (0..h).flat_map(|y| (0..w).flat_map(move |x| [(x * 7) as u8, (y * 5) as u8, ((x + y) * 3) as u8])).collect();
        Rgb8 { w, h, data }
    }

    #[test]
    fn resizing_to_the_current_size_changes_nothing() {
        let img = gradient(40, 30);
        assert_eq!(fit_size(40, 30, 40), (40, 30));
        assert_eq!(resize_max_side(img.clone(), 40), img);
        let tall = gradient(17, 33);
        assert_eq!(resize_max_side(tall.clone(), 33), tall);
    }

    #[test]
    fn resizing_keeps_the_aspect_ratio() {
        assert_eq!(fit_size(400, 300, 200), (200, 150));
        assert_eq!(fit_size(300, 400, 200), (150, 200));
        assert_eq!(fit_size(1000, 1, 10), (10, 1));
        let r = resize_max_side(gradient(40, 30), 20);
        assert_eq!((r.w, r.h, r.data.len()), (20, 15, 20 * 15 * 3));
        let up = resize_max_side(gradient(10, 5), 40);
        assert_eq!((up.w, up.h), (40, 20));
    }

    #[test]
    fn alpha_composites_over_white() {
        let mut rgba = image::RgbaImage::new(2, 1);
        rgba.put_pixel(0, 0, image::Rgba([0, 0, 0, 0]));
        rgba.put_pixel(1, 0, image::Rgba([10, 20, 30, 255]));
        let out = to_rgb_over_white(DynamicImage::ImageRgba8(rgba));
        assert_eq!(out.into_raw(), vec![255, 255, 255, 10, 20, 30]);
    }

    #[test]
    fn save_and_load_round_trip_png() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.png");
        let img = gradient(9, 7);
        save(&img, &path).unwrap();
        assert_eq!(load(&path).unwrap(), img);
        // No temp file is left beside it.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn output_extensions() {
        assert_eq!(out_format(Path::new("a.PNG")).unwrap(), OutFormat::Png);
        assert_eq!(out_format(Path::new("a.jpeg")).unwrap(), OutFormat::Jpeg);
        assert!(out_format(Path::new("a.gif")).is_err());
        assert!(out_format(Path::new("a")).is_err());
        assert_eq!(iteration_path(Path::new("d/out.png"), 100), Path::new("d/out_100.png"));
    }
}

#[cfg(test)]
mod load_tests {
    use super::*;

    /// A w x h JPEG: left half red, right half blue, with an optional EXIF orientation.
    fn jpeg(w: u32, h: u32, orientation: Option<u16>) -> Vec<u8> {
        let img = RgbImage::from_fn(w, h, |x, _| if x < w / 2 { image::Rgb([220, 20, 20]) } else { image::Rgb([20, 20, 220]) });
        let mut bytes = Vec::new();
        img.write_with_encoder(image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 95)).unwrap();
        if let Some(o) = orientation {
            // APP1 "Exif": a little-endian TIFF header and one IFD entry, Orientation (0x0112), SHORT.
            let mut exif = b"Exif\0\0II*\0\x08\0\0\0\x01\0\x12\x01\x03\0\x01\0\0\0".to_vec();
            exif.extend_from_slice(&o.to_le_bytes());
            exif.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
            let mut app1 = vec![0xFF, 0xE1];
            app1.extend_from_slice(&((exif.len() + 2) as u16).to_be_bytes());
            app1.extend_from_slice(&exif);
            bytes.splice(2..2, app1); // right after SOI
        }
        bytes
    }

    fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
        let p = dir.join(name);
        fs::write(&p, bytes).unwrap();
        p
    }

    #[test]
    fn truncated_jpegs_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let whole = jpeg(64, 48, None);
        assert!(load(&write(dir.path(), "whole.jpg", &whole)).is_ok());
        for keep in [whole.len() * 6 / 10, whole.len() - 2] {
            let err = load(&write(dir.path(), "cut.jpg", &whole[..keep])).unwrap_err().to_string();
            assert!(err.contains("truncated"), "{keep} bytes: {err}");
        }
    }

    #[test]
    fn exif_orientation_is_applied() {
        let dir = tempfile::tempdir().unwrap();
        let plain = load(&write(dir.path(), "plain.jpg", &jpeg(32, 16, None))).unwrap();
        assert_eq!((plain.w, plain.h), (32, 16));
        // 6: the stored image is to be turned 90° clockwise: its left (red) half goes on top.
        let turned = load(&write(dir.path(), "turned.jpg", &jpeg(32, 16, Some(6)))).unwrap();
        assert_eq!((turned.w, turned.h), (16, 32));
        fn px(img: &Rgb8, x: usize, y: usize) -> &[u8] {
            &img.data[(y * img.w + x) * 3..(y * img.w + x) * 3 + 3]
        }
        assert!(px(&turned, 8, 4)[0] > 150 && px(&turned, 8, 4)[2] < 100, "top is red: {:?}", px(&turned, 8, 4));
        assert!(px(&turned, 8, 28)[2] > 150 && px(&turned, 8, 28)[0] < 100, "bottom is blue: {:?}", px(&turned, 8, 28));
    }

    /// A PNG's bytes: RGBA with structure in every channel, alpha included.
    fn rgba_png(w: u32, h: u32) -> Vec<u8> {
        let img = image::RgbaImage::from_fn(w, h, |x, y| image::Rgba([(x * 7 % 256) as u8, (y * 5 % 256) as u8, ((x * y) % 251) as u8, (128 + (x + y) % 128) as u8]));
        let mut bytes = Vec::new();
        img.write_to(&mut std::io::Cursor::new(&mut bytes), ImageFormat::Png).unwrap();
        bytes
    }

    #[test]
    fn a_png_reduced_while_read_is_the_block_mean_of_the_whole_decode() {
        // 50 x 37 by 4: the last column and row of blocks are partial (2 x 4, 4 x 1, 2 x 1).
        let bytes = rgba_png(50, 37);
        let (whole, source) = decode(&bytes, "t", |s| s).unwrap();
        assert_eq!(source, (50, 37));
        let reduced = png_reduced(&bytes, 4).unwrap();
        assert_eq!(reduced.dimensions(), (13, 10));
        for (by, bx) in [(0, 0), (3, 5), (9, 12), (9, 0), (0, 12)] {
            let (mut sum, mut n) = ([0u32; 3], 0);
            for y in by * 4..(by * 4 + 4).min(37) {
                for x in bx * 4..(bx * 4 + 4).min(50) {
                    for c in 0..3 {
                        sum[c] += whole.data[(y * 50 + x) * 3 + c] as u32;
                    }
                    n += 1;
                }
            }
            let mean = sum.map(|v| ((v + n / 2) / n) as u8);
            assert_eq!(reduced.get_pixel(bx as u32, by as u32).0, mean, "block ({bx}, {by})");
        }
    }

    #[test]
    fn decoding_keeps_twice_the_size_needed_and_reports_the_source_size() {
        let bytes = rgba_png(300, 200);
        // Needed 30 x 20: a factor of 5 keeps 60 x 40.
        let (img, source) = decode(&bytes, "t", |(w, h)| fit_size(w, h, 30)).unwrap();
        assert_eq!((source, (img.w, img.h)), ((300, 200), (60, 40)));
        // Needed 100 x 67: factor 1, the whole image.
        let (img, _) = decode(&bytes, "t", |(w, h)| fit_size(w, h, 100)).unwrap();
        assert_eq!((img.w, img.h), (300, 200));
        // After the final resize the reduced and the whole decode agree closely.
        let (whole, _) = decode(&bytes, "t", |s| s).unwrap();
        let (reduced, _) = decode(&bytes, "t", |(w, h)| fit_size(w, h, 30)).unwrap();
        let (a, b) = (resize_exact(whole, (30, 20)), resize_exact(reduced, (30, 20)));
        let diff = a.data.iter().zip(&b.data).map(|(&x, &y)| (x as i32 - y as i32).abs()).max().unwrap();
        assert!(diff <= 24, "max difference {diff}");
    }

    #[test]
    fn a_png_reduced_as_read_needs_at_most_a_bounded_buffer() {
        // The largest PNG read (2^30 pixels) with no reduction wanted: 4096² pixels at most.
        for (wanted, pixels) in [(1, MAX_STREAMED_PIXELS), (2, MAX_STREAMED_PIXELS), (1, 15 << 26), (3, 1 << 27), (1 << 20, 1 << 30)] {
            let f = reduction_factor(wanted, pixels) as u64;
            assert!(pixels.div_ceil(f * f) <= MAX_REDUCED_PIXELS && f <= 4096, "{wanted} {pixels}: factor {f}");
            assert!(f >= (wanted as u64).min(4096), "never less than wanted");
        }
        assert_eq!(reduction_factor(3, 100 * 100), 3);
        assert_eq!(reduction_factor(1, MAX_STREAMED_PIXELS), 8);
    }

    #[test]
    fn an_image_too_large_to_decode_whole_is_refused_from_its_header() {
        // A JPEG whose frame header claims 60000 x 60000 (3.6 Gpx): refused before any decoding.
        let mut bytes = jpeg(16, 16, None);
        let sof = bytes.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
        bytes[sof + 5..sof + 9].copy_from_slice(&[0xEA, 0x60, 0xEA, 0x60]);
        let err = decode(&bytes, "huge.jpg", |s| s).unwrap_err().to_string();
        assert!(err.contains("60000x60000") && err.contains("more than"), "{err}");
        // A PNG may be larger than that whole-decode bound: it is reduced as it is read.
        let big = {
            let img = image::GrayImage::from_fn(9000, 8000, |x, y| image::Luma([((x / 100 + y / 100) % 2 * 255) as u8]));
            let mut bytes = Vec::new();
            img.write_to(&mut std::io::Cursor::new(&mut bytes), ImageFormat::Png).unwrap();
            bytes
        };
        let (img, source) = decode(&big, "big.png", |s| s).unwrap();
        assert_eq!(source, (9000, 8000));
        assert_eq!((img.w, img.h), (3000, 2667), "reduced by 3 to stay under {MAX_REDUCED_PIXELS} pixels");
    }
}
