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
        if let (pickle::Value::Str(k), pickle::Value::Tensor(t)) = (k, v) {
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

/// A legacy-format file whose state dict calls os.system: refused before anything runs.
#[test]
fn forbidden_global_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut legacy = Vec::new();
    legacy.extend(b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19."); // magic
    legacy.extend(b"\x80\x02M\xe9\x03."); // protocol version 1001
    legacy.extend(b"\x80\x02}."); // sys_info
    legacy.extend(b"\x80\x02cos\nsystem\nX\x05\x00\x00\x00touch\x85R."); // os.system('touch')
    let p = dir.path().join("evil_legacy.pth");
    std::fs::write(&p, &legacy).unwrap();
    expect_error(&p, &["os.system"]);

    // The same payload as the data.pkl of a zip .pth, through STACK_GLOBAL (protocol 4).
    let p = dir.path().join("evil_zip.pth");
    let mut w = zip::ZipWriter::new(std::fs::File::create(&p).unwrap());
    let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    w.start_file("evil/data.pkl", opts).unwrap();
    w.write_all(b"\x80\x04\x8c\x08builtins\x8c\x04exec\x93\x8c\x04pass\x85R.").unwrap();
    w.finish().unwrap();
    expect_error(&p, &["builtins.exec"]);
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
