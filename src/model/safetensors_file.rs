//! `.safetensors`: u64 LE header length, JSON header, data. The header is parsed by the
//! `safetensors` crate; only wanted tensors' bytes are read (by seeking), f32/f16/bf16/f64.

use super::file::{check_sizes, RawTensor};
use super::pickle::DType;
use anyhow::{anyhow, bail, ensure, Result};
use safetensors::tensor::Metadata;
use safetensors::Dtype;
use std::io::{Read, Seek, SeekFrom};

/// Headers above this are refused (the crate's own limit is 100 MB).
pub const MAX_HEADER: u64 = 100_000_000;

/// `file` is read from its start (a `File`, or a `Cursor` over bytes).
pub fn load<R: Read + Seek>(mut file: R, want: &dyn Fn(&str) -> bool) -> Result<Vec<RawTensor>> {
    let file_len = file.seek(SeekFrom::End(0))?;
    file.rewind()?;
    let mut n = [0u8; 8];
    file.read_exact(&mut n).map_err(|_| anyhow!("file is truncated (no safetensors header)"))?;
    let n = u64::from_le_bytes(n);
    ensure!(n <= MAX_HEADER, "safetensors header of {n} bytes is too large");
    ensure!(8 + n <= file_len, "file is truncated (safetensors header of {n} bytes, file of {file_len})");
    let mut header = vec![0u8; n as usize];
    file.read_exact(&mut header)?;
    let meta: Metadata = serde_json::from_slice(&header).map_err(|e| anyhow!("invalid safetensors header ({e})"))?;
    let data_start = 8 + n;
    let data_len = file_len - data_start;
    ensure!(
        meta.data_len() as u64 == data_len,
        "file is truncated or padded (safetensors header describes {} bytes of data, file holds {data_len})",
        meta.data_len()
    );
    let mut wanted: Vec<_> = meta.tensors().into_iter().filter(|(k, _)| want(k)).collect();
    wanted.sort_by_key(|(_, info)| info.data_offsets.0);
    check_sizes(wanted.iter().map(|(k, info)| (k.as_str(), &info.shape[..])))?;
    let mut out = Vec::new();
    for (name, info) in wanted {
        let dtype = match info.dtype {
            Dtype::F32 => DType::F32,
            Dtype::F16 => DType::F16,
            Dtype::BF16 => DType::BF16,
            Dtype::F64 => DType::F64,
            d => bail!("{name} is {d:?}; only F32, F16, BF16 and F64 weights are supported"),
        };
        let (s, e) = info.data_offsets;
        file.seek(SeekFrom::Start(data_start + s as u64))?;
        let mut bytes = vec![0u8; e - s];
        file.read_exact(&mut bytes)?;
        out.push(RawTensor { name, shape: info.shape.clone(), data: dtype.to_f32(&bytes) });
    }
    Ok(out)
}
