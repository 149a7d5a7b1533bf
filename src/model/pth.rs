//! PyTorch `.pth` state dicts: the zip serialisation (torch >= 1.6) and the legacy one (before,
//! e.g. torchvision's vgg19-dcbb9e9d.pth). Only wanted tensors' bytes are read.

use super::file::{check_sizes, RawTensor};
use super::pickle::{self, DType, TensorRef, Value};
use anyhow::{anyhow, bail, ensure, Context, Result};
use std::collections::{HashMap, HashSet};
use std::io::{self, BufReader, Read, Seek, SeekFrom};

/// (key, tensor) pairs, still unread.
type Tensors = Vec<(String, TensorRef)>;

/// Tensors of the state dict whose key `want`s, and the dtype of every storage the dict uses.
fn wanted_tensors(state: &Value, want: &dyn Fn(&str) -> bool) -> Result<(Tensors, HashMap<String, DType>)> {
    let mut out = Vec::new();
    let mut dtypes = HashMap::new();
    for (k, v) in pickle::dict_items(state)? {
        let Value::Tensor(t) = &v else { continue };
        dtypes.insert(t.storage.key.clone(), t.storage.dtype);
        let Value::Str(key) = &k else { continue };
        if want(key) {
            t.check_contiguous(key)?;
            out.push((key.to_string(), TensorRef::clone(t)));
        }
    }
    check_sizes(out.iter().map(|(k, t)| (k.as_str(), &t.shape[..])))?;
    Ok((out, dtypes))
}

/// Byte range of `t` within its storage's bytes, checked against the storage's length.
fn byte_range(name: &str, t: &TensorRef, storage_bytes: u64) -> Result<(u64, usize)> {
    let es = t.storage.dtype.size() as u64;
    let start = t.offset.checked_mul(es).ok_or_else(|| anyhow!("{name}: storage offset overflows"))?;
    let len = t.numel().and_then(|n| (n as u64).checked_mul(es)).ok_or_else(|| anyhow!("{name}: size overflows"))?;
    ensure!(
        start.checked_add(len).is_some_and(|end| end <= storage_bytes),
        "{name}: {} elements from offset {} lie outside its storage of {} elements (file truncated or corrupt)",
        len / es,
        t.offset,
        storage_bytes / es
    );
    Ok((start, len as usize))
}

/// The zip serialisation: `<archive>/data.pkl` and one `<archive>/data/<key>` entry per storage.
/// `file` is read from its start (a `File`, or a `Cursor` over bytes).
pub fn load_zip<R: Read + Seek>(file: R, want: &dyn Fn(&str) -> bool) -> Result<Vec<RawTensor>> {
    let mut zip = zip::ZipArchive::new(BufReader::new(file)).map_err(|e| anyhow!("truncated or corrupt zip archive ({e})"))?;
    let pkl_name = zip
        .file_names()
        .find(|n| n.as_ref().is_ok_and(|n| n.ends_with("/data.pkl") || *n == "data.pkl"))
        .transpose()?
        .map(|n| n.into_owned())
        .ok_or_else(|| anyhow!("zip archive has no data.pkl: not a PyTorch model file"))?;
    let prefix = pkl_name.strip_suffix("data.pkl").expect("matched above").to_string();
    if let Ok(mut bo) = zip.by_name(&format!("{prefix}byteorder")) {
        let mut s = String::new();
        bo.read_to_string(&mut s)?;
        ensure!(s.trim() == "little", "tensors are stored {}-endian; only little-endian files are supported", s.trim());
    }
    let state = {
        let mut entry = BufReader::new(zip.by_name(&pkl_name).map_err(|e| anyhow!("cannot read {pkl_name} ({e})"))?);
        let state = pickle::load(&mut entry).with_context(|| format!("in {pkl_name}"))?;
        read_to_end_checked(&mut entry, &pkl_name)?;
        state
    };
    let (tensors, _) = wanted_tensors(&state, want)?;
    let mut out = Vec::new();
    for (name, t) in tensors {
        let entry_name = format!("{prefix}data/{}", t.storage.key);
        let mut entry = zip.by_name(&entry_name).map_err(|e| anyhow!("{name}: storage {entry_name} is missing ({e})"))?;
        let (start, len) = byte_range(&name, &t, entry.size())?;
        io::copy(&mut (&mut entry).take(start), &mut io::sink())?;
        let data = read_f32(&mut entry, t.storage.dtype, len).map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => anyhow!("{name}: storage {entry_name} is truncated"),
            _ => anyhow!("{name}: cannot read storage {entry_name} ({e})"),
        })?;
        // The zip reader checks an entry's CRC-32 only once it is read to its end: read the
        // rest, so that a flipped byte anywhere in the storage is found.
        read_to_end_checked(&mut entry, &entry_name)?;
        out.push(RawTensor { name, shape: t.shape, data });
    }
    Ok(out)
}

/// Reads what is left of the zip entry `r` (named `entry_name`), so that the zip reader compares
/// the entry's CRC-32 with the one its header records (it does so at the entry's end).
fn read_to_end_checked(r: &mut impl Read, entry_name: &str) -> Result<()> {
    io::copy(r, &mut io::sink()).map(drop).map_err(|e| {
        if e.to_string().to_ascii_lowercase().contains("checksum") {
            anyhow!("{entry_name}: the entry's CRC-32 does not match (the file is damaged: download it again)")
        } else {
            anyhow!("{entry_name}: cannot read ({e})")
        }
    })
}

/// `len` bytes of `dtype` elements from `r`, converted to f32 a megabyte at a time: the values
/// grow as bytes arrive (a forged entry size cannot make us allocate up front), and the raw
/// bytes never sit in memory whole (a 1 MB zip inflates to a 1 GB f64 storage: 512 MB as f32).
fn read_f32(r: &mut impl Read, dtype: DType, len: usize) -> io::Result<Vec<f32>> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; len.min(1 << 20)];
    let mut left = len;
    while left > 0 {
        let n = left.min(buf.len());
        r.read_exact(&mut buf[..n])?;
        out.extend(dtype.to_f32(&buf[..n]));
        left -= n;
    }
    Ok(out)
}

const LEGACY_MAGIC: i128 = 0x1950a86a20f9469cfc6c;

/// The legacy serialisation: pickles of the magic number, protocol version, sys_info, the state
/// dict and the storage keys; then per key an 8-byte LE element count and the raw elements.
/// `file` is read from its start (a `File`, or a `Cursor` over bytes).
pub fn load_legacy<R: Read + Seek>(mut file: R, want: &dyn Fn(&str) -> bool) -> Result<Vec<RawTensor>> {
    let file_len = file.seek(SeekFrom::End(0))?;
    file.rewind()?;
    let mut r = BufReader::new(file);
    let magic = pickle::load(&mut r)?;
    ensure!(matches!(magic, Value::Int(LEGACY_MAGIC)), "a pickle, but not a PyTorch model file (no legacy magic number)");
    let version = pickle::load(&mut r)?.as_int()?;
    ensure!(version == 1001, "legacy PyTorch file of protocol version {version}; only 1001 is supported");
    let sys_info = pickle::load(&mut r)?;
    for (k, v) in pickle::dict_items(&sys_info)? {
        if matches!(&k, Value::Str(s) if &**s == "little_endian") {
            ensure!(matches!(v, Value::Bool(true)), "tensors are stored big-endian; only little-endian files are supported");
        }
    }
    let state = pickle::load(&mut r)?;
    let (tensors, dtypes) = wanted_tensors(&state, want)?;
    let keys = pickle::load(&mut r)?.items()?;
    let needed: HashSet<&str> = tensors.iter().map(|(_, t)| t.storage.key.as_str()).collect();
    let mut storages: HashMap<String, Vec<u8>> = HashMap::new();
    for key in keys {
        let key = key.as_str()?.to_string();
        let dtype = *dtypes.get(&key).ok_or_else(|| anyhow!("storage {key} is used by no tensor; cannot tell its element size"))?;
        let mut count = [0u8; 8];
        r.read_exact(&mut count).map_err(|_| anyhow!("file is truncated (storage {key} is missing)"))?;
        let bytes = u64::from_le_bytes(count).checked_mul(dtype.size() as u64).ok_or_else(|| anyhow!("storage {key}: size overflows"))?;
        let pos = r.stream_position()?;
        ensure!(pos.checked_add(bytes).is_some_and(|end| end <= file_len), "file is truncated (storage {key} needs {bytes} bytes, {} left)", file_len - pos);
        if needed.contains(key.as_str()) {
            let mut data = vec![0u8; bytes as usize];
            r.read_exact(&mut data)?;
            storages.insert(key, data);
        } else {
            r.seek_relative(bytes as i64)?;
        }
    }
    let mut out = Vec::new();
    for (name, t) in tensors {
        let Some(data) = storages.get(&t.storage.key) else { bail!("{name}: storage {} is not in the file", t.storage.key) };
        let (start, len) = byte_range(&name, &t, data.len() as u64)?;
        let start = start as usize;
        out.push(RawTensor { name, shape: t.shape, data: t.storage.dtype.to_f32(&data[start..start + len]) });
    }
    Ok(out)
}
