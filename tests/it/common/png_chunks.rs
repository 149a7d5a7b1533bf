//! Hand-made PNG and zlib bytes for the tests of the PNG text readers: chunks a PNG encoder
//! would not write (bombs, damaged streams), zlib streams built bit by bit.

/// A w x h RGB PNG (grey pixels) with `chunks` (type, raw body) before its image data.
pub fn png_with_chunks(w: u32, h: u32, chunks: &[(&[u8; 4], Vec<u8>)]) -> Vec<u8> {
    let mut bytes = Vec::new();
    let mut enc = png::Encoder::new(&mut bytes, w, h);
    enc.set_color(png::ColorType::Rgb);
    let mut writer = enc.write_header().unwrap();
    for (kind, body) in chunks {
        writer.write_chunk(png::chunk::ChunkType(**kind), body).unwrap();
    }
    writer.write_image_data(&vec![128u8; (w * h * 3) as usize]).unwrap();
    writer.finish().unwrap();
    bytes
}

/// zlib stream of `data` in stored (uncompressed) blocks.
pub fn zlib_stored(data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x78, 0x01];
    let chunks: Vec<&[u8]> = if data.is_empty() { vec![&[][..]] } else { data.chunks(65535).collect() };
    for (i, c) in chunks.iter().enumerate() {
        out.push((i + 1 == chunks.len()) as u8);
        out.extend((c.len() as u16).to_le_bytes());
        out.extend((!(c.len() as u16)).to_le_bytes());
        out.extend(*c);
    }
    out.extend(adler32(data).to_be_bytes());
    out
}

pub fn adler32(data: &[u8]) -> u32 {
    let (mut a, mut b) = (1u64, 0u64);
    for &x in data {
        a = (a + x as u64) % 65521;
        b = (b + a) % 65521;
    }
    ((b << 16) | a) as u32
}

/// A zlib stream that inflates to `1 + 258 k` spaces (one fixed-Huffman block: a literal, then
/// k copies of 258 bytes at distance 1, 13 bits each): 1 GiB from 6.8 MB.
pub fn zlib_bomb(k: usize) -> Vec<u8> {
    struct Bits {
        out: Vec<u8>,
        acc: u64,
        n: u32,
    }
    impl Bits {
        /// `n` bits of `v`, least significant first.
        fn put(&mut self, v: u64, n: u32) {
            self.acc |= v << self.n;
            self.n += n;
            while self.n >= 8 {
                self.out.push(self.acc as u8);
                self.acc >>= 8;
                self.n -= 8;
            }
        }
        /// A Huffman code of `n` bits, most significant first.
        fn code(&mut self, code: u64, n: u32) {
            let rev = (0..n).fold(0, |r, i| r | (((code >> i) & 1) << (n - 1 - i)));
            self.put(rev, n);
        }
    }
    let mut b = Bits { out: vec![0x78, 0x01], acc: 0, n: 0 };
    b.put(1, 1); // BFINAL
    b.put(1, 2); // fixed Huffman
    b.code(0x30 + b' ' as u64, 8); // literal ' '
    for _ in 0..k {
        b.code(0b1100_0101, 8); // length 258 (symbol 285)
        b.code(0, 5); // distance 1
    }
    b.code(0, 7); // end of block
    if b.n > 0 {
        b.put(0, 8 - b.n);
    }
    // Adler-32 of 1 + 258 k spaces, in closed form: a = 1 + 32 N, b = N + 32 N (N + 1) / 2.
    let n = 1 + 258 * k as u128;
    let a = (1 + 32 * n) % 65521;
    let s = (n + 32 * n * (n + 1) / 2) % 65521;
    let mut out = b.out;
    out.extend((((s << 16) | a) as u32).to_be_bytes());
    out
}
