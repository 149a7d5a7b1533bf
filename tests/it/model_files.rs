//! Weight files: the three fixture formats load to the same network; damaged, foreign and
//! hostile files give one-line errors naming the file, never a panic.

use neural_style::model::file::{read_features, RawTensor};
use neural_style::model::{load_file, pickle, Layer, Vgg};
use safetensors::tensor::TensorView;
use safetensors::Dtype;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

const FILES: [&str; 3] = ["narrow_vgg19_zip.pth", "narrow_vgg19_legacy.pth", "narrow_vgg19.safetensors"];
const NAMES: [&str; 13] = [
    "relu1_1", "relu1_2", "relu2_1", "relu2_2", "relu3_1", "relu3_2", "relu3_3", "relu3_4", "relu4_1", "relu4_2", "relu4_3", "relu4_4", "relu5_1",
];

/// (name, feature index, c_in, c_out, weight, bias) per conv, `None` per pool.
type Table = Vec<Option<(String, usize, usize, usize, Vec<f32>, Vec<f32>)>>;

fn table(v: &Vgg) -> Table {
    v.layers
        .iter()
        .map(|l| match l {
            Layer::Conv(c) => Some((c.name.clone(), c.feature_index, c.c_in, c.c_out, c.weight.clone(), c.bias.clone())),
            Layer::Pool => None,
        })
        .collect()
}

#[test]
fn all_three_formats_load_the_same_network() {
    let nets: Vec<Vgg> = FILES.iter().map(|f| load_file(&fixture(f)).unwrap()).collect();
    let first = table(&nets[0]);
    assert_eq!(nets[0].relu_names(), NAMES);
    let indices: Vec<usize> = first.iter().flatten().map(|c| c.1).collect();
    assert_eq!(indices, [0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28]);
    let widths: Vec<usize> = first.iter().map(|l| l.as_ref().map_or(0, |c| c.3)).collect();
    assert_eq!(widths, [8, 8, 0, 12, 12, 0, 16, 16, 16, 16, 0, 16, 16, 16, 16, 0, 16]);
    for (f, n) in FILES.iter().zip(&nets).skip(1) {
        // Bit-identical: features.28.bias is a view at storage offset 8 in the .pth files and a
        // plain copy in the .safetensors, so this also checks that offsets are honoured.
        assert!(table(n) == first, "{f} differs from {}", FILES[0]);
    }
    for (f, n) in FILES.iter().zip(&nets) {
        assert!(n.source.ends_with(f));
    }
}

/// Pickle protocol 4 (torch.save(pickle_protocol=4)), zip and legacy: the first two convs.
#[test]
fn pickle_protocol_4_files() {
    let full = table(&load_file(&fixture(FILES[0])).unwrap());
    for f in ["head_proto4_zip.pth", "head_proto4_legacy.pth"] {
        let head = load_file(&fixture(f)).unwrap();
        assert_eq!(head.relu_names(), ["relu1_1", "relu1_2"], "{f}");
        assert!(table(&head)[..] == full[..2], "{f} differs from {}", FILES[0]);
    }
}

#[test]
fn classifier_tensors_are_not_read() {
    for f in FILES {
        let names: Vec<String> = read_features(&fixture(f)).unwrap().into_iter().map(|t| t.name).collect();
        assert_eq!(names.len(), 26, "{f}: {names:?}");
        assert!(names.iter().all(|n| n.starts_with("features.")), "{f}: {names:?}");
    }
}

/// The zip .pth with the classifier's storage entries removed still loads: they are never opened.
#[test]
fn zip_reader_never_opens_classifier_storages() {
    let src = std::fs::File::open(fixture("narrow_vgg19_zip.pth")).unwrap();
    let mut zip = zip::ZipArchive::new(src).unwrap();
    let mut pkl = Vec::new();
    zip.by_name("narrow_vgg19_zip/data.pkl").unwrap().read_to_end(&mut pkl).unwrap();
    let state = pickle::load(&mut &pkl[..]).unwrap();
    let mut skip = Vec::new();
    for (k, v) in pickle::dict_items(&state).unwrap() {
        if let (pickle::Value::Str(k), pickle::Value::Tensor(t)) = (&k, &v) {
            if k.starts_with("classifier.") {
                skip.push(format!("narrow_vgg19_zip/data/{}", t.storage.key));
            }
        }
    }
    assert_eq!(skip.len(), 2);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("no_classifier.pth");
    let mut w = zip::ZipWriter::new(std::fs::File::create(&out).unwrap());
    for i in 0..zip.len() {
        let e = zip.by_index(i).unwrap();
        if !skip.contains(&e.name().unwrap().to_string()) {
            w.raw_copy_file(e).unwrap();
        }
    }
    w.finish().unwrap();
    let a = load_file(&out).unwrap();
    assert!(table(&a) == table(&load_file(&fixture("narrow_vgg19_zip.pth")).unwrap()));
}

fn write_safetensors(path: &Path, tensors: &[(String, Dtype, Vec<usize>, Vec<u8>)]) {
    let views: Vec<(String, TensorView)> = tensors.iter().map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap())).collect();
    safetensors::serialize_to_file(views, None, path).unwrap();
}

#[test]
fn safetensors_f16_and_bf16_are_converted() {
    let f32_tensors: Vec<RawTensor> = read_features(&fixture("narrow_vgg19.safetensors")).unwrap();
    let reference = table(&load_file(&fixture("narrow_vgg19.safetensors")).unwrap());
    let dir = tempfile::tempdir().unwrap();
    for (dtype, rel) in [(Dtype::F16, 1e-3f32), (Dtype::BF16, 8e-3)] {
        let tensors: Vec<_> = f32_tensors
            .iter()
            .map(|t| {
                let bytes: Vec<u8> = match dtype {
                    Dtype::F16 => t.data.iter().flat_map(|&v| half::f16::from_f32(v).to_le_bytes()).collect(),
                    _ => t.data.iter().flat_map(|&v| half::bf16::from_f32(v).to_le_bytes()).collect(),
                };
                (t.name.clone(), dtype, t.shape.clone(), bytes)
            })
            .collect();
        let p = dir.path().join(format!("{dtype:?}.safetensors"));
        write_safetensors(&p, &tensors);
        let got = table(&load_file(&p).unwrap());
        assert_eq!(got.len(), reference.len());
        for (g, r) in got.iter().flatten().zip(reference.iter().flatten()) {
            assert_eq!((&g.0, g.1, g.2, g.3), (&r.0, r.1, r.2, r.3));
            for (a, b) in g.4.iter().chain(&g.5).zip(r.4.iter().chain(&r.5)) {
                // Relative rounding of the format (2^-11, 2^-8), floored for subnormal f16s.
                assert!((a - b).abs() <= rel * b.abs() + 1e-6, "{dtype:?}: {a} vs {b}");
            }
        }
    }
}

/// Loading must fail with one line that names the file and contains `needle`.
fn expect_error(path: &Path, needles: &[&str]) -> String {
    let e = match load_file(path) {
        Ok(_) => panic!("{} loaded", path.display()),
        Err(e) => e.to_string(),
    };
    eprintln!("{e}");
    assert!(!e.contains('\n'), "not one line: {e}");
    assert!(e.starts_with(&path.display().to_string()), "does not name the file: {e}");
    assert!(needles.iter().any(|n| e.contains(n)), "{e}\n expected one of {needles:?}");
    e
}

#[test]
fn missing_file() {
    let dir = tempfile::tempdir().unwrap();
    expect_error(&dir.path().join("nope.pth"), &["cannot open"]);
}

#[test]
fn truncated_files() {
    let dir = tempfile::tempdir().unwrap();
    for f in FILES {
        let bytes = std::fs::read(fixture(f)).unwrap();
        let n = bytes.len();
        // Every length through the headers, then a spread through the data, then the very end.
        let lengths: Vec<usize> = (0..64).chain((64..n).step_by(997)).chain(n - 8..n).collect();
        for len in lengths {
            let p = dir.path().join(format!("cut_{len}_{f}"));
            std::fs::write(&p, &bytes[..len]).unwrap();
            expect_error(&p, &["truncated", "too short", "not a model file", "corrupt"]);
        }
    }
}

#[test]
fn random_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = neural_style::rng::Rng::new(5);
    for (i, len) in [1usize, 9, 100, 4096, 100_000].into_iter().enumerate() {
        let bytes: Vec<u8> = (0..len).map(|_| (rng.normal() * 1e6) as i64 as u8).collect();
        let p = dir.path().join(format!("random_{i}.pth"));
        std::fs::write(&p, &bytes).unwrap();
        expect_error(&p, &["not a model file", "too short"]);
    }
    let p = dir.path().join("image.png");
    std::fs::copy(fixture("content.png"), &p).unwrap();
    expect_error(&p, &["not a model file"]);
}

fn f32_bytes(n: usize) -> Vec<u8> {
    (0..n).flat_map(|i| (i as f32 * 0.01).to_le_bytes()).collect()
}

#[test]
fn wrong_layouts() {
    let dir = tempfile::tempdir().unwrap();
    let t = |name: &str, shape: &[usize]| (name.to_string(), Dtype::F32, shape.to_vec(), f32_bytes(shape.iter().product()));
    let cases: Vec<(&str, Vec<_>, &str)> = vec![
        ("no_features", vec![t("classifier.0.weight", &[10, 16])], "no features.N.weight"),
        (
            "unchained",
            vec![t("features.0.weight", &[4, 3, 3, 3]), t("features.0.bias", &[4]), t("features.2.weight", &[4, 5, 3, 3]), t("features.2.bias", &[4])],
            "takes 5 channels",
        ),
        ("not_3x3", vec![t("features.0.weight", &[4, 3, 1, 1]), t("features.0.bias", &[4])], "expected (c_out, c_in, 3, 3)"),
        ("bias_missing", vec![t("features.0.weight", &[4, 3, 3, 3])], "no features.0.bias"),
        (
            "bad_gap",
            vec![t("features.0.weight", &[4, 3, 3, 3]), t("features.0.bias", &[4]), t("features.7.weight", &[4, 4, 3, 3]), t("features.7.bias", &[4])],
            "are 7 apart",
        ),
        ("int_weights", vec![("features.0.weight".into(), Dtype::I32, vec![4, 3, 3, 3], vec![0; 432]), t("features.0.bias", &[4])], "only F32"),
    ];
    for (name, tensors, needle) in cases {
        let p = dir.path().join(format!("{name}.safetensors"));
        write_safetensors(&p, &tensors);
        let e = expect_error(&p, &[needle]);
        if name != "int_weights" {
            assert!(e.contains("wrong layout"), "{e}");
        }
    }
}

/// A legacy `.pth` (magic, protocol 1001, empty sys_info) whose state-dict pickle is `state`.
fn write_legacy_pth(path: &Path, state: &[u8]) {
    let mut legacy = Vec::new();
    legacy.extend(b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19."); // magic
    legacy.extend(b"\x80\x02M\xe9\x03."); // protocol version 1001
    legacy.extend(b"\x80\x02}."); // sys_info
    legacy.extend(state);
    std::fs::write(path, &legacy).unwrap();
}

/// A zip `.pth` of `entries` (name, bytes), deflated: torch stores them, but a hostile file can
/// inflate a few KB into gigabytes.
fn write_zip_pth(path: &Path, entries: &[(&str, &[u8])]) {
    let mut w = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
    let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated).large_file(true);
    for (name, bytes) in entries {
        w.start_file(*name, opts).unwrap();
        w.write_all(bytes).unwrap();
    }
    w.finish().unwrap();
}

/// A legacy-format file whose state dict calls os.system: refused before anything runs.
#[test]
fn forbidden_global_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("evil_legacy.pth");
    write_legacy_pth(&p, b"\x80\x02cos\nsystem\nX\x05\x00\x00\x00touch\x85R."); // os.system('touch')
    expect_error(&p, &["os.system"]);

    // The same payload as the data.pkl of a zip .pth, through STACK_GLOBAL (protocol 4).
    let p = dir.path().join("evil_zip.pth");
    write_zip_pth(&p, &[("evil/data.pkl", b"\x80\x04\x8c\x08builtins\x8c\x04exec\x93\x8c\x04pass\x85R.")]);
    expect_error(&p, &["builtins.exec"]);
}

/// Runs the binary on `model` under a 2 GB address-space limit (a stack overflow or a failed
/// allocation aborts the process, which a test in this process would not survive) and checks it
/// exits 1 within a minute with one `error:` line naming the file and containing `needle`.
fn binary_refuses(model: &Path, needle: &str) {
    let image = fixture("content.png");
    let start = std::time::Instant::now();
    let out = std::process::Command::new("sh")
        .args(["-c", "ulimit -v 2000000; exec \"$0\" --content-image \"$1\" --style-image \"$1\" --model \"$2\" --num-iterations 1 --device cpu --output-image \"$3\""])
        .arg(env!("CARGO_BIN_EXE_neural-style"))
        .arg(&image)
        .arg(model)
        .arg(model.with_extension("png"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(out.status.code(), Some(1), "{}: {}", model.display(), stderr.chars().take(2000).collect::<String>());
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(errors[0].contains(&model.display().to_string()) && errors[0].contains(needle), "{}\n expected {needle:?}", errors[0]);
    assert!(start.elapsed().as_secs() < 60, "{}: took {:?}", model.display(), start.elapsed());
}

/// Tuples nested 200,000 deep (a few hundred KB of TUPLE1 opcodes) used to overflow the stack when
/// the value was dropped.
#[test]
fn deeply_nested_pickles_do_not_overflow_the_stack() {
    let dir = tempfile::tempdir().unwrap();
    let mut deep = b"\x80\x02N".to_vec();
    deep.extend(std::iter::repeat_n(0x85u8, 200_000));
    deep.push(b'.');
    let p = dir.path().join("deep_legacy.pth");
    write_legacy_pth(&p, &deep);
    binary_refuses(&p, "holds a tuple, not a state dict");
    let p = dir.path().join("deep_zip.pth");
    write_zip_pth(&p, &[("deep/data.pkl", &deep)]);
    binary_refuses(&p, "holds a tuple, not a state dict");
}

/// Pickles of a few KB (deflated) that ran for seconds and took gigabytes: stopped at the limits.
#[test]
fn pickle_work_and_memory_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let pickle = |body: &[u8], n: usize| {
        let mut p = b"\x80\x02N".to_vec();
        for _ in 0..n {
            p.extend(body);
        }
        p.push(b'.');
        p
    };
    let mut big_string = vec![0x8d];
    big_string.extend((1u64 << 20).to_le_bytes());
    big_string.extend(vec![b'a'; 1 << 20]);
    big_string.push(b'0'); // POP
    let cases: [(&str, Vec<u8>, &str); 4] = [
        ("stack", pickle(b"N", 20_000_000), "stack exceeds"),
        ("memo", pickle(b"\x94", 10_000_000), "memo exceeds"),
        ("ops", pickle(b"N0", 10_000_000), "opcodes"),
        ("strings", pickle(&big_string, 100), "strings exceed"),
    ];
    for (name, pkl, needle) in cases {
        let p = dir.path().join(format!("{name}.pth"));
        write_zip_pth(&p, &[("a/data.pkl", &pkl)]);
        assert!(std::fs::metadata(&p).unwrap().len() < 1 << 20);
        binary_refuses(&p, needle);
    }
}

/// A 1 MB zip whose storage inflates to 150 MB, read as eight (2048, 2048, 3, 3) tensors (2.4 GB
/// as f32): refused from the shapes, before any bytes are read.
#[test]
fn claimed_sizes_are_refused_before_reading() {
    let dir = tempfile::tempdir().unwrap();
    let mut pkl = b"\x80\x02}(".to_vec();
    for i in 0..8 {
        let key = format!("features.{}.weight", 2 * i);
        pkl.extend(b"X");
        pkl.extend((key.len() as u32).to_le_bytes());
        pkl.extend(key.as_bytes());
        pkl.extend(b"ctorch._utils\n_rebuild_tensor_v2\n((X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpuJ\x00\x00\x40\x02tQ");
        pkl.extend(b"K\x00(M\x00\x08M\x00\x08K\x03K\x03t(J\x00\x48\x00\x00K\x09K\x03K\x01t\x89ccollections\nOrderedDict\n)RtR");
    }
    pkl.extend(b"u.");
    let p = dir.path().join("bomb.pth");
    write_zip_pth(&p, &[("bomb/data.pkl", &pkl), ("bomb/data/0", &vec![0u8; 2048 * 2048 * 9 * 4])]);
    assert!(std::fs::metadata(&p).unwrap().len() < 1 << 20);
    binary_refuses(&p, "elements");
}

/// Channel counts no VGG has: 0 (a panic in the Gram matrix) and above 4096 (a 200,000-channel
/// conv asked for 160 GB).
#[test]
fn implausible_channel_counts_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let t = |name: &str, shape: &[usize]| (name.to_string(), Dtype::F32, shape.to_vec(), f32_bytes(shape.iter().product()));
    let cases = [
        ("zero_out", vec![t("features.0.weight", &[0, 3, 3, 3]), t("features.0.bias", &[0])], "features.0.weight has 0 output channels"),
        ("zero_in", vec![t("features.0.weight", &[4, 0, 3, 3]), t("features.0.bias", &[4])], "features.0.weight has 0 input channels"),
        ("wide", vec![t("features.0.weight", &[4097, 3, 3, 3]), t("features.0.bias", &[4097])], "features.0.weight has 4097 output channels"),
    ];
    for (name, tensors, needle) in cases {
        let p = dir.path().join(format!("{name}.safetensors"));
        write_safetensors(&p, &tensors);
        expect_error(&p, &[needle]);
    }
}

#[test]
fn non_finite_weights_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let good = read_features(&fixture("narrow_vgg19.safetensors")).unwrap();
    for (i, bad) in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY].into_iter().enumerate() {
        let tensors: Vec<_> = good
            .iter()
            .map(|t| {
                let mut data = t.data.clone();
                if t.name == "features.2.bias" {
                    data[1] = bad;
                }
                (t.name.clone(), Dtype::F32, t.shape.clone(), data.iter().flat_map(|v| v.to_le_bytes()).collect())
            })
            .collect();
        let p = dir.path().join(format!("bad_{i}.safetensors"));
        write_safetensors(&p, &tensors);
        expect_error(&p, &[&format!("features.2.bias holds {bad} at element 1")]);
    }
}

/// Random byte changes in the headers, pickles and zip directory: an error or a network, never a
/// panic (a panic fails the test).
#[test]
fn corrupted_bytes_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = neural_style::rng::Rng::new(11);
    let mut pick = |n: usize| ((rng.normal().abs() * 1e6) as usize) % n;
    for f in FILES {
        let bytes = std::fs::read(fixture(f)).unwrap();
        let n = bytes.len();
        let (mut ok, mut failed) = (0, 0);
        for i in 0..300 {
            let mut b = bytes.clone();
            for _ in 0..1 + i % 3 {
                // The first and last 3000 bytes: headers, pickles, the zip's central directory.
                let at = if pick(2) == 0 { pick(3000) } else { n - 1 - pick(3000) };
                b[at] = pick(256) as u8;
            }
            let p = dir.path().join(format!("mutated_{i}_{f}"));
            std::fs::write(&p, &b).unwrap();
            match load_file(&p) {
                Ok(_) => ok += 1,
                Err(e) => {
                    assert!(!e.to_string().contains('\n'), "{e}");
                    failed += 1;
                }
            }
        }
        eprintln!("{f}: {ok} loaded, {failed} refused");
    }
}

/// Issue 19 item 15: one byte flipped in a conv's storage (stored, so the zip reader inflates
/// nothing and only the CRC-32 can tell) is refused naming the file and the entry; the same
/// byte flipped in data.pkl's last opcode-free byte too. Before, the corrupted weights loaded.
#[test]
fn a_zip_entry_whose_crc_does_not_match_is_refused() {
    let src = std::fs::read(fixture("narrow_vgg19_zip.pth")).unwrap();
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(&src)).unwrap();
    let names: Vec<String> = zip.file_names().map(|n| n.unwrap().into_owned()).collect();
    let dir = tempfile::tempdir().unwrap();
    let mut tried = 0;
    for name in names.iter().filter(|n| n.contains("/data/")).take(3) {
        let e = zip.by_name(name).unwrap();
        assert_eq!(e.compression(), zip::CompressionMethod::Stored, "{name}");
        let (start, size) = (e.data_start().unwrap() as usize, e.size() as usize);
        drop(e);
        // The last byte: past the part a tensor may read, if the storage is larger than it.
        for at in [start, start + size - 1] {
            let mut bytes = src.clone();
            bytes[at] ^= 0x40;
            let p = dir.path().join("flipped.pth");
            std::fs::write(&p, &bytes).unwrap();
            let e = expect_error(&p, &["CRC-32 does not match"]);
            assert!(e.contains(name.as_str()), "does not name the entry {name}: {e}");
            tried += 1;
        }
    }
    assert_eq!(tried, 6);
    // The unchanged file still loads.
    let p = dir.path().join("intact.pth");
    std::fs::write(&p, &src).unwrap();
    load_file(&p).unwrap();
}
