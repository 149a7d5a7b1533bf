//! A minimal, safe pickle reader: just what a PyTorch state dict needs.
//!
//! It never runs code: `GLOBAL`/`STACK_GLOBAL` resolve only names on an allow-list to inert
//! markers, `REDUCE` knows how to "call" each of them, and every other opcode or name is refused
//! with an error. Tensors come out as [`TensorRef`]s (storage key, dtype, offset, shape, stride);
//! their bytes are read later, and only for the tensors the caller wants.

use anyhow::{anyhow, bail, ensure, Result};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::io::Read;
use std::rc::Rc;

/// Element type of a storage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DType {
    F32,
    F64,
    F16,
    BF16,
}

impl DType {
    pub fn size(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F64 => 8,
            DType::F16 | DType::BF16 => 2,
        }
    }

    /// Little-endian bytes (len = n * size) -> f32.
    pub fn to_f32(self, bytes: &[u8]) -> Vec<f32> {
        match self {
            DType::F32 => bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
            DType::F64 => bytes.chunks_exact(8).map(|b| f64::from_le_bytes(b.try_into().expect("chunk of 8")) as f32).collect(),
            DType::F16 => bytes.chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
            DType::BF16 => bytes.chunks_exact(2).map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
        }
    }
}

/// A storage as a persistent id names it: `('storage', type, key, location, size[, view])`.
#[derive(Clone, Debug, PartialEq)]
pub struct StorageRef {
    pub key: String,
    pub dtype: DType,
    /// Elements in the (root) storage, as the persistent id says.
    pub size: u64,
    /// Old torch's storage views: element offset of the view into the root storage `key`.
    pub view_offset: u64,
}

/// A tensor whose bytes have not been read: elements `offset ..` of `storage`, laid out by stride.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorRef {
    pub storage: StorageRef,
    /// In elements, from the start of the (root) storage.
    pub offset: u64,
    pub shape: Vec<usize>,
    pub stride: Vec<usize>,
}

impl TensorRef {
    /// Element count; `None` if it overflows (a damaged or hostile file).
    pub fn numel(&self) -> Option<usize> {
        self.shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d))
    }

    /// Checks the layout is C-contiguous (size-1 dimensions may have any stride).
    pub fn check_contiguous(&self, name: &str) -> Result<()> {
        ensure!(self.shape.len() == self.stride.len(), "{name}: shape {:?} and stride {:?} differ in rank", self.shape, self.stride);
        ensure!(self.numel().is_some(), "{name}: shape {:?} is too large", self.shape);
        let mut expect = 1usize;
        for (&n, &s) in self.shape.iter().zip(&self.stride).rev() {
            ensure!(n == 1 || s == expect, "{name}: stride {:?} for shape {:?} is not contiguous", self.stride, self.shape);
            expect *= n;
        }
        Ok(())
    }
}

/// Callables the allow-list lets a pickle name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Global {
    OrderedDict,
    RebuildTensor,
    RebuildTensorV2,
    RebuildParameter,
    StorageType(DType),
}

fn resolve_global(module: &str, name: &str) -> Result<Global> {
    Ok(match (module, name) {
        ("collections", "OrderedDict") => Global::OrderedDict,
        ("torch._utils", "_rebuild_tensor") => Global::RebuildTensor,
        ("torch._utils", "_rebuild_tensor_v2") => Global::RebuildTensorV2,
        ("torch._utils", "_rebuild_parameter") => Global::RebuildParameter,
        ("torch", "FloatStorage") => Global::StorageType(DType::F32),
        ("torch", "DoubleStorage") => Global::StorageType(DType::F64),
        ("torch", "HalfStorage") => Global::StorageType(DType::F16),
        ("torch", "BFloat16Storage") => Global::StorageType(DType::BF16),
        _ => bail!("pickle refers to {module}.{name}, which is not allowed in a weights file (only state-dict tensors are read)"),
    })
}

/// A pickled value. Lists and dicts are shared (as in Python), so memo references see mutations
/// and a deeply repeated reference costs nothing. Every payload on the heap is behind an `Rc`, so
/// a clone (DUP, BINGET, MEMOIZE) costs a few bytes however large the value: what a pickle can
/// allocate is bounded by the opcodes it may run ([`MAX_OPS`]) and the bytes it may read.
#[derive(Clone, Debug)]
pub enum Value {
    None,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(Rc<str>),
    Bytes(Rc<[u8]>),
    Tuple(Rc<Vec<Value>>),
    List(Rc<Shared<Vec<Value>>>),
    /// Insertion-ordered pairs (keys are not hashed; duplicates: the last wins on lookup).
    Dict(Rc<Shared<Vec<(Value, Value)>>>),
    Global(Global),
    Storage(Rc<StorageRef>),
    Tensor(Rc<TensorRef>),
}

/// The items of a list or dict, and whether another container holds it yet. A held container is
/// frozen: a pickle can only close a reference cycle (`l = []; l.append(l)`) by changing a
/// container that something inside it already refers to, and `Rc` never frees a cycle (a pickle
/// of a few KB leaked megabytes per load). Python's pickler fills every container before its
/// parent refers to it, except in a self-referencing structure, which no state dict is.
#[derive(Debug, Default)]
pub struct Shared<T> {
    held: Cell<bool>,
    items: RefCell<T>,
}

impl<T> Shared<T> {
    fn new(items: T) -> Rc<Shared<T>> {
        Rc::new(Shared { held: Cell::new(false), items: RefCell::new(items) })
    }
}

/// Marks the lists and dicts among `items` as held (they are being put into a container).
fn hold(items: &[Value]) {
    for v in items {
        match v {
            Value::List(l) => l.held.set(true),
            Value::Dict(d) => d.held.set(true),
            _ => {}
        }
    }
}

/// Refuses to change a container that another one holds (see [`Shared`]).
fn ensure_unheld<T>(c: &Shared<T>, kind: &str) -> Result<()> {
    ensure!(
        !c.held.get(),
        "pickle changes a {kind} that another container already holds (a self-referencing structure): not a plain state-dict file"
    );
    Ok(())
}

/// Iterative: a hostile pickle nests tuples a million deep in a few hundred KB, and the derived
/// (recursive) drop would overflow the stack. Children of a container this value owns alone are
/// moved to a work list, so every drop below this one meets an empty container.
impl Drop for Value {
    fn drop(&mut self) {
        fn take_children(v: &mut Value, out: &mut Vec<Value>) {
            match v {
                Value::Tuple(rc) => {
                    if let Some(items) = Rc::get_mut(rc) {
                        out.append(items);
                    }
                }
                Value::List(rc) => {
                    if let Some(shared) = Rc::get_mut(rc) {
                        out.append(shared.items.get_mut());
                    }
                }
                Value::Dict(rc) => {
                    if let Some(shared) = Rc::get_mut(rc) {
                        for (k, v) in shared.items.get_mut().drain(..) {
                            out.push(k);
                            out.push(v);
                        }
                    }
                }
                _ => {}
            }
        }
        let mut pending = Vec::new();
        take_children(self, &mut pending);
        while let Some(mut v) = pending.pop() {
            take_children(&mut v, &mut pending);
        }
    }
}

impl Value {
    fn kind(&self) -> &'static str {
        match self {
            Value::None => "None",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "float",
            Value::Str(_) => "str",
            Value::Bytes(_) => "bytes",
            Value::Tuple(_) => "tuple",
            Value::List(_) => "list",
            Value::Dict(_) => "dict",
            Value::Global(_) => "global",
            Value::Storage(_) => "storage",
            Value::Tensor(_) => "tensor",
        }
    }

    pub fn as_int(&self) -> Result<i128> {
        match self {
            Value::Int(i) => Ok(*i),
            Value::Bool(b) => Ok(*b as i128),
            v => bail!("expected an int in the pickle, found a {}", v.kind()),
        }
    }

    pub fn as_str(&self) -> Result<&str> {
        match self {
            Value::Str(s) => Ok(s),
            v => bail!("expected a string in the pickle, found a {}", v.kind()),
        }
    }

    /// Items of a tuple or list.
    pub fn items(&self) -> Result<Vec<Value>> {
        match self {
            Value::Tuple(t) => Ok(t.as_ref().clone()),
            Value::List(l) => Ok(l.items.borrow().clone()),
            v => bail!("expected a tuple in the pickle, found a {}", v.kind()),
        }
    }

    fn usizes(&self, what: &str) -> Result<Vec<usize>> {
        self.items()?
            .iter()
            .map(|v| usize::try_from(v.as_int()?).map_err(|_| anyhow!("negative or huge {what} in the pickle")))
            .collect()
    }
}

// Limits on what one pickle may make the reader do. Every model file is treated as hostile: a
// 20 KB zip can inflate to a data.pkl of 20M opcodes, and without limits a pickle of 1 MB or less
// can take gigabytes or abort. A VGG state dict has a few dozen tensors (torchvision's VGG-19:
// 38, about 30 opcodes, 8 memo entries and 100 bytes of strings each); the limits below admit
// state dicts of tens of thousands of tensors, yet keep the reader within a few hundred MB.

/// Opcodes executed. Each allocates a few dozen bytes at most (strings aside), so this bounds
/// time and memory: 2M opcodes are ~50x the pickle of a 1000-tensor state dict.
pub const MAX_OPS: u64 = 2_000_000;
/// Items on the stack, and MARKs. torch's pickler batches SETITEMS by 1000 pairs: ~2000 items.
pub const MAX_STACK: usize = 100_000;
/// Memo entries (torch's pickles memoise every object: ~8 per tensor).
pub const MAX_MEMO: usize = 100_000;
/// Bytes of string and bytes payloads, all together (a state dict's keys and storage names).
pub const MAX_STRING_BYTES: u64 = 64 << 20;

/// Source of pickle bytes with the few reads the opcodes need; `Truncated` errors say so.
struct Input<'r, R: Read> {
    r: &'r mut R,
    /// Of [`MAX_STRING_BYTES`].
    string_bytes_left: u64,
}

impl<R: Read> Input<'_, R> {
    fn bytes(&mut self, n: usize) -> Result<Vec<u8>> {
        // Grows as bytes arrive, so a bogus length in a damaged file cannot allocate gigabytes.
        let allowed = (n as u64).min(self.string_bytes_left);
        let mut v = Vec::new();
        (&mut *self.r).take(allowed).read_to_end(&mut v)?;
        ensure!(v.len() as u64 == allowed, "file is truncated (pickle data ends early)");
        ensure!(
            allowed == n as u64,
            "pickle strings exceed {MAX_STRING_BYTES} bytes in all (a state dict's names need a few KB): not a plain state-dict file"
        );
        self.string_bytes_left -= allowed;
        Ok(v)
    }
    fn arr<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut a = [0u8; N];
        self.r.read_exact(&mut a).map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => anyhow!("file is truncated (pickle data ends early)"),
            _ => e.into(),
        })?;
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.arr::<1>()?[0])
    }
    fn line(&mut self) -> Result<String> {
        let mut s = Vec::new();
        loop {
            match self.u8()? {
                b'\n' => break,
                c => s.push(c),
            }
            ensure!(s.len() < 1024, "pickle GLOBAL name is too long");
        }
        String::from_utf8(s).map_err(|_| anyhow!("pickle GLOBAL name is not UTF-8"))
    }
}

fn string(b: Vec<u8>) -> Result<Value> {
    Ok(Value::Str(String::from_utf8(b).map_err(|_| anyhow!("pickle string is not valid UTF-8"))?.into()))
}

/// Python 2 str (old checkpoints' keys): Latin-1; ASCII in practice.
fn latin1(b: Vec<u8>) -> Value {
    Value::Str(b.iter().map(|&c| c as char).collect::<String>().into())
}

/// Two's-complement little-endian integer of up to 16 bytes.
fn long(b: &[u8]) -> Result<i128> {
    ensure!(b.len() <= 16, "pickle integer of {} bytes is too large", b.len());
    if b.is_empty() {
        return Ok(0);
    }
    let fill = if b[b.len() - 1] & 0x80 != 0 { 0xff } else { 0 };
    let mut a = [fill; 16];
    a[..b.len()].copy_from_slice(b);
    Ok(i128::from_le_bytes(a))
}

/// Reads one pickle (up to and including STOP) from `r` and returns its value. `r` is left just
/// after the STOP opcode, so consecutive pickles (legacy .pth) can be read one after another.
pub fn load<R: Read>(r: &mut R) -> Result<Value> {
    let mut inp = Input { r, string_bytes_left: MAX_STRING_BYTES };
    let mut stack: Vec<Value> = Vec::new();
    let mut marks: Vec<usize> = Vec::new();
    // A map, not a vector: memo indices come from the file and may be sparse.
    let mut memo: HashMap<usize, Value> = HashMap::new();
    let pop = |stack: &mut Vec<Value>| stack.pop().ok_or_else(|| anyhow!("malformed pickle: stack underflow"));
    let pop_mark = |stack: &mut Vec<Value>, marks: &mut Vec<usize>| -> Result<Vec<Value>> {
        let m = marks.pop().ok_or_else(|| anyhow!("malformed pickle: no MARK"))?;
        ensure!(m <= stack.len(), "malformed pickle: MARK above the stack");
        Ok(stack.split_off(m))
    };
    for ops in 1.. {
        let op = inp.u8()?;
        ensure!(ops <= MAX_OPS, "pickle runs more than {MAX_OPS} opcodes (a VGG state dict needs a few thousand): not a plain state-dict file");
        ensure!(
            stack.len() < MAX_STACK && marks.len() < MAX_STACK,
            "pickle stack exceeds {MAX_STACK} items at opcode 0x{op:02x} ({:?}): not a plain state-dict file",
            op as char
        );
        match op {
            0x80 => {
                // PROTO
                let p = inp.u8()?;
                ensure!(p <= 5, "pickle protocol {p} is not supported");
            }
            0x95 => {
                inp.arr::<8>()?; // FRAME: a length hint only
            }
            b'.' => return pop(&mut stack), // STOP
            b'c' => {
                // GLOBAL "module\nname\n"
                let module = inp.line()?;
                let name = inp.line()?;
                stack.push(Value::Global(resolve_global(&module, &name)?));
            }
            0x93 => {
                // STACK_GLOBAL
                let name = pop(&mut stack)?;
                let module = pop(&mut stack)?;
                stack.push(Value::Global(resolve_global(module.as_str()?, name.as_str()?)?));
            }
            b'(' => marks.push(stack.len()), // MARK
            b'0' => {
                pop(&mut stack)?; // POP
            }
            b'1' => {
                pop_mark(&mut stack, &mut marks)?; // POP_MARK
            }
            b'2' => {
                // DUP
                let top = stack.last().cloned().ok_or_else(|| anyhow!("malformed pickle: stack underflow"))?;
                stack.push(top);
            }
            b')' => stack.push(Value::Tuple(Rc::new(Vec::new()))),
            b't' => {
                let items = pop_mark(&mut stack, &mut marks)?;
                hold(&items);
                stack.push(Value::Tuple(Rc::new(items)));
            }
            0x85..=0x87 => {
                // TUPLE1..3
                let n = (op - 0x84) as usize;
                ensure!(stack.len() >= n, "malformed pickle: stack underflow");
                let items = stack.split_off(stack.len() - n);
                hold(&items);
                stack.push(Value::Tuple(Rc::new(items)));
            }
            b']' => stack.push(Value::List(Shared::new(Vec::new()))),
            b'l' => {
                let items = pop_mark(&mut stack, &mut marks)?;
                hold(&items);
                stack.push(Value::List(Shared::new(items)));
            }
            b'}' => stack.push(Value::Dict(Shared::new(Vec::new()))),
            b'd' => {
                let items = pop_mark(&mut stack, &mut marks)?;
                ensure!(items.len() % 2 == 0, "malformed pickle: DICT with an odd number of items");
                hold(&items);
                let pairs = items.chunks_exact(2).map(|kv| (kv[0].clone(), kv[1].clone())).collect();
                stack.push(Value::Dict(Shared::new(pairs)));
            }
            b's' | b'u' => {
                // SETITEM, SETITEMS
                let items = if op == b's' {
                    ensure!(stack.len() >= 2, "malformed pickle: stack underflow");
                    stack.split_off(stack.len() - 2)
                } else {
                    pop_mark(&mut stack, &mut marks)?
                };
                ensure!(items.len() % 2 == 0, "malformed pickle: SETITEMS with an odd number of items");
                hold(&items);
                match stack.last() {
                    Some(Value::Dict(d)) => {
                        ensure_unheld(d, "dict")?;
                        d.items.borrow_mut().extend(items.chunks_exact(2).map(|kv| (kv[0].clone(), kv[1].clone())));
                    }
                    Some(v) => bail!("malformed pickle: SETITEM on a {}", v.kind()),
                    None => bail!("malformed pickle: stack underflow"),
                }
            }
            b'a' | b'e' => {
                // APPEND, APPENDS
                let items = if op == b'a' { vec![pop(&mut stack)?] } else { pop_mark(&mut stack, &mut marks)? };
                hold(&items);
                match stack.last() {
                    Some(Value::List(l)) => {
                        ensure_unheld(l, "list")?;
                        l.items.borrow_mut().extend(items);
                    }
                    Some(v) => bail!("malformed pickle: APPEND on a {}", v.kind()),
                    None => bail!("malformed pickle: stack underflow"),
                }
            }
            b'J' => stack.push(Value::Int(i32::from_le_bytes(inp.arr()?) as i128)),
            b'K' => stack.push(Value::Int(inp.u8()? as i128)),
            b'M' => stack.push(Value::Int(u16::from_le_bytes(inp.arr()?) as i128)),
            0x8a => {
                // LONG1
                let n = inp.u8()? as usize;
                stack.push(Value::Int(long(&inp.bytes(n)?)?));
            }
            0x8b => {
                // LONG4
                let n = u32::from_le_bytes(inp.arr()?) as usize;
                ensure!(n <= 16, "pickle integer of {n} bytes is too large");
                stack.push(Value::Int(long(&inp.bytes(n)?)?));
            }
            b'G' => stack.push(Value::Float(f64::from_be_bytes(inp.arr()?))),
            b'X' => {
                let n = u32::from_le_bytes(inp.arr()?) as usize;
                stack.push(string(inp.bytes(n)?)?);
            }
            0x8c => {
                let n = inp.u8()? as usize;
                stack.push(string(inp.bytes(n)?)?);
            }
            0x8d => {
                let n = usize::try_from(u64::from_le_bytes(inp.arr()?))?;
                stack.push(string(inp.bytes(n)?)?);
            }
            // BINSTRING, SHORT_BINSTRING: Python 2 str (old checkpoints' keys); ASCII in practice.
            b'T' => {
                let n = u32::from_le_bytes(inp.arr()?) as usize;
                stack.push(latin1(inp.bytes(n)?));
            }
            b'U' => {
                let n = inp.u8()? as usize;
                stack.push(latin1(inp.bytes(n)?));
            }
            b'B' => {
                let n = u32::from_le_bytes(inp.arr()?) as usize;
                stack.push(Value::Bytes(inp.bytes(n)?.into()));
            }
            b'C' => {
                let n = inp.u8()? as usize;
                stack.push(Value::Bytes(inp.bytes(n)?.into()));
            }
            0x8e => {
                let n = usize::try_from(u64::from_le_bytes(inp.arr()?))?;
                stack.push(Value::Bytes(inp.bytes(n)?.into()));
            }
            b'N' => stack.push(Value::None),
            0x88 => stack.push(Value::Bool(true)),
            0x89 => stack.push(Value::Bool(false)),
            b'q' | b'r' | 0x94 => {
                // BINPUT, LONG_BINPUT, MEMOIZE
                let idx = match op {
                    b'q' => inp.u8()? as usize,
                    b'r' => u32::from_le_bytes(inp.arr()?) as usize,
                    _ => memo.len(),
                };
                let top = stack.last().cloned().ok_or_else(|| anyhow!("malformed pickle: stack underflow"))?;
                memo.insert(idx, top);
                ensure!(memo.len() <= MAX_MEMO, "pickle memo exceeds {MAX_MEMO} entries (at opcode 0x{op:02x}): not a plain state-dict file");
            }
            b'h' | b'j' => {
                // BINGET, LONG_BINGET
                let idx = if op == b'h' { inp.u8()? as usize } else { u32::from_le_bytes(inp.arr()?) as usize };
                let v = memo.get(&idx).cloned().ok_or_else(|| anyhow!("malformed pickle: memo entry {idx} is missing"))?;
                stack.push(v);
            }
            b'Q' => {
                // BINPERSID
                let pid = pop(&mut stack)?;
                stack.push(Value::Storage(Rc::new(persistent_storage(&pid)?)));
            }
            b'R' => {
                // REDUCE
                let args = pop(&mut stack)?;
                let f = pop(&mut stack)?;
                stack.push(reduce(&f, &args)?);
            }
            b'b' => {
                // BUILD: the state of an OrderedDict (its `_metadata`) is not needed.
                let _state = pop(&mut stack)?;
                match stack.last() {
                    Some(Value::Dict(_)) | Some(Value::Tensor(_)) => {}
                    Some(v) => bail!("pickle BUILD on a {} is not supported", v.kind()),
                    None => bail!("malformed pickle: stack underflow"),
                }
            }
            _ => bail!("unsupported pickle opcode 0x{op:02x} ({:?}): not a plain state-dict file", op as char),
        }
    }
    unreachable!("the loop ends at STOP, an error or MAX_OPS")
}

/// `('storage', storage_type, key, location, size[, view_metadata])`.
fn persistent_storage(pid: &Value) -> Result<StorageRef> {
    let t = pid.items()?;
    ensure!(t.len() >= 5 && matches!(&t[0], Value::Str(s) if &**s == "storage"), "pickle persistent id is not a tensor storage");
    let dtype = match &t[1] {
        Value::Global(Global::StorageType(d)) => *d,
        v => bail!("pickle storage type is a {}, expected torch.*Storage", v.kind()),
    };
    let key = match &t[2] {
        Value::Str(s) => s.to_string(),
        Value::Int(i) => i.to_string(),
        v => bail!("pickle storage key is a {}", v.kind()),
    };
    let size = u64::try_from(t[4].as_int()?).map_err(|_| anyhow!("negative storage size in the pickle"))?;
    let mut s = StorageRef { key, dtype, size, view_offset: 0 };
    // Old torch's views of a storage: `key` names the root storage (whose bytes the file holds)
    // and view metadata is (view key, element offset into the root, view size).
    if let Some(view) = t.get(5).filter(|v| !matches!(v, Value::None)) {
        let v = view.items()?;
        ensure!(v.len() == 3, "pickle storage view metadata has {} items, expected 3", v.len());
        s.view_offset = u64::try_from(v[1].as_int()?).map_err(|_| anyhow!("negative storage view offset"))?;
    }
    Ok(s)
}

fn reduce(f: &Value, args: &Value) -> Result<Value> {
    let g = match f {
        Value::Global(g) => *g,
        v => bail!("pickle REDUCE calls a {}, which is not callable here", v.kind()),
    };
    let a = args.items()?;
    match g {
        Global::OrderedDict => {
            ensure!(a.is_empty(), "pickle builds an OrderedDict from arguments; expected OrderedDict()");
            Ok(Value::Dict(Shared::new(Vec::new())))
        }
        // (storage, storage_offset, size, stride[, requires_grad, backward_hooks[, metadata]])
        Global::RebuildTensor | Global::RebuildTensorV2 => {
            ensure!(a.len() >= 4, "pickle _rebuild_tensor takes {} arguments, expected at least 4", a.len());
            let storage = match &a[0] {
                Value::Storage(s) => StorageRef::clone(s),
                v => bail!("pickle tensor is built from a {}, expected a storage", v.kind()),
            };
            let offset = u64::try_from(a[1].as_int()?).map_err(|_| anyhow!("negative tensor storage offset"))?;
            let shape = a[2].usizes("tensor size")?;
            let stride = a[3].usizes("tensor stride")?;
            let offset = offset.checked_add(storage.view_offset).ok_or_else(|| anyhow!("tensor storage offset overflows"))?;
            Ok(Value::Tensor(Rc::new(TensorRef { offset, storage, shape, stride })))
        }
        // (data, requires_grad, backward_hooks): a Parameter is its data here.
        Global::RebuildParameter => match a.first() {
            Some(t @ Value::Tensor(_)) => Ok(t.clone()),
            _ => bail!("pickle _rebuild_parameter without a tensor"),
        },
        Global::StorageType(_) => bail!("pickle calls a storage type directly; only persistent-id storages are supported"),
    }
}

/// The `(key, value)` pairs of a state dict (a dict at the top level).
pub fn dict_items(v: &Value) -> Result<Vec<(Value, Value)>> {
    match v {
        Value::Dict(d) => Ok(d.items.borrow().clone()),
        v => bail!("the pickle holds a {}, not a state dict", v.kind()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(bytes: &[u8]) -> Result<Value> {
        load(&mut &bytes[..])
    }

    /// Protocol-2 pickle of {'features.0.bias': _rebuild_tensor_v2(storage('0', FloatStorage, 8),
    /// 2, (3,), (1,), False, OrderedDict())}, as torch.save writes it.
    fn tensor_pickle() -> Vec<u8> {
        let mut p = vec![0x80, 2, b'}', b'q', 0, b'('];
        p.extend(b"X\x0f\x00\x00\x00features.0.bias");
        p.extend(b"ctorch._utils\n_rebuild_tensor_v2\nq\x01");
        p.extend(b"((X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x08tQ");
        p.extend(b"K\x02K\x03\x85K\x01\x85\x89ccollections\nOrderedDict\n)Rtq\x02R");
        p.extend(b"u.");
        p
    }

    #[test]
    fn reads_a_state_dict_tensor() {
        let v = run(&tensor_pickle()).unwrap();
        let items = dict_items(&v).unwrap();
        assert_eq!(items.len(), 1);
        assert_eq!(items[0].0.as_str().unwrap(), "features.0.bias");
        let Value::Tensor(t) = &items[0].1 else { panic!("not a tensor: {:?}", items[0].1) };
        assert_eq!(t.storage, StorageRef { key: "0".into(), dtype: DType::F32, size: 8, view_offset: 0 });
        assert_eq!((t.offset, t.shape.clone(), t.stride.clone()), (2, vec![3], vec![1]));
        t.check_contiguous("x").unwrap();
    }

    /// Old torch (torchvision's 2017 files): Python 2 string keys, `_rebuild_tensor` (v1), an
    /// OrderedDict filled by SETITEMS then BUILD with its `_metadata`, and a storage view
    /// ('storage', HalfStorage, 'root', 'cpu', 20, ('view', 4, 10)).
    #[test]
    fn old_style_state_dict() {
        let mut p = b"\x80\x02ccollections\nOrderedDict\nq\x00)Rq\x01(U\x11features.2.weight".to_vec();
        p.extend(b"ctorch._utils\n_rebuild_tensor\n((U\x07storagectorch\nHalfStorage\nq\x02U\x04rootU\x03cpuK\x14");
        p.extend(b"(U\x04viewK\x04K\x0attQK\x01(K\x02K\x03t(K\x03K\x01ttRu}U\x09_metadata}sb.");
        let v = run(&p).unwrap();
        let items = dict_items(&v).unwrap();
        assert_eq!(items[0].0.as_str().unwrap(), "features.2.weight");
        let Value::Tensor(t) = &items[0].1 else { panic!("not a tensor: {:?}", items[0].1) };
        assert_eq!(t.storage, StorageRef { key: "root".into(), dtype: DType::F16, size: 20, view_offset: 4 });
        assert_eq!((t.offset, t.shape.clone(), t.stride.clone()), (5, vec![2, 3], vec![3, 1]));
    }

    #[test]
    fn basic_values_and_memo() {
        // (1, -2, 300, 2**40, 'a', b'b', None, True, 1.5, [7, 7]) with a memoised 7 and a LONG1.
        let mut p = vec![0x80, 4, 0x95, 0, 0, 0, 0, 0, 0, 0, 0, b'('];
        p.extend(b"K\x01J\xfe\xff\xff\xffM\x2c\x01\x8a\x06\x00\x00\x00\x00\x00\x01");
        p.extend(b"\x8c\x01a\x94C\x01bN\x88G\x3f\xf8\x00\x00\x00\x00\x00\x00");
        p.extend(b"]K\x07q\x05ah\x05at.");
        let v = run(&p).unwrap().items().unwrap();
        assert_eq!(v[0].as_int().unwrap(), 1);
        assert_eq!(v[1].as_int().unwrap(), -2);
        assert_eq!(v[2].as_int().unwrap(), 300);
        assert_eq!(v[3].as_int().unwrap(), 1 << 40);
        assert_eq!(v[4].as_str().unwrap(), "a");
        assert!(matches!(&v[5], Value::Bytes(b) if **b == *b"b"));
        assert!(matches!(v[6], Value::None));
        assert!(matches!(v[7], Value::Bool(true)));
        assert!(matches!(v[8], Value::Float(f) if f == 1.5));
        assert_eq!(v[9].items().unwrap().iter().map(|x| x.as_int().unwrap()).collect::<Vec<_>>(), vec![7, 7]);
    }

    #[test]
    fn legacy_magic_number_as_long1() {
        let p = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19.";
        assert_eq!(run(p).unwrap().as_int().unwrap(), 0x1950a86a20f9469cfc6c);
    }

    #[test]
    fn refuses_os_system() {
        let p = b"\x80\x02cos\nsystem\nX\x04\x00\x00\x00echo\x85R.";
        let e = run(p).unwrap_err().to_string();
        assert!(e.contains("os.system") && e.contains("not allowed"), "{e}");
        // The same through STACK_GLOBAL.
        let p = b"\x80\x04\x8c\x05posix\x8c\x06system\x93.";
        let e = run(p).unwrap_err().to_string();
        assert!(e.contains("posix.system"), "{e}");
    }

    #[test]
    fn refuses_unknown_opcodes() {
        // INST ('i') would instantiate a class by name.
        let e = run(b"\x80\x02(ibuiltins\neval\n.").unwrap_err().to_string();
        assert!(e.contains("unsupported pickle opcode 0x69"), "{e}");
    }

    #[test]
    fn truncation_is_an_error_at_every_length() {
        let p = tensor_pickle();
        for n in 0..p.len() {
            let e = run(&p[..n]).unwrap_err().to_string();
            assert!(e.contains("truncated"), "at {n}: {e}");
        }
    }

    #[test]
    fn malformed_stack_is_an_error() {
        for p in [&b"\x80\x02."[..], b"\x80\x02t.", b"\x80\x02K\x01K\x02s.", b"\x80\x02h\x05.", b"\x80\x02N)R."] {
            assert!(run(p).is_err());
        }
    }

    #[test]
    fn huge_length_does_not_allocate() {
        // BINUNICODE claiming 4 GiB, then nothing.
        let e = run(b"\x80\x02X\xff\xff\xff\xff").unwrap_err().to_string();
        assert!(e.contains("truncated"), "{e}");
    }

    /// A million nested tuples: built, then dropped without recursion (a recursive drop overflows
    /// the stack; the binary-level test in tests/it/model_files.rs shows the abort).
    #[test]
    fn deep_nesting_drops_iteratively() {
        let mut p = b"\x80\x02N".to_vec();
        p.extend(std::iter::repeat_n(0x85u8, 1_000_000));
        p.push(b'.');
        assert!(matches!(run(&p).unwrap(), Value::Tuple(_)));
    }

    /// Reference cycles would never be freed: a container may not change once another holds it.
    #[test]
    fn self_references_are_refused() {
        for p in [
            &b"\x80\x02]q\x00h\x00a."[..],               // l.append(l)
            b"\x80\x02]q\x00(h\x00h\x00e.",               // l.extend([l, l])
            b"\x80\x02]q\x00h\x00\x850K\x01a.",          // (l,); l.append(1)
            b"\x80\x02}q\x00K\x01h\x00s.",                // d[1] = d
            b"\x80\x02}q\x00h\x00\x850K\x01K\x02s.",    // (d,); d[1] = 2
            b"\x80\x02]q\x00(h\x00l0h\x00K\x01a.",       // [l]; l.append(1)
        ] {
            let e = run(p).unwrap_err().to_string();
            assert!(e.contains("self-referencing"), "{p:?}: {e}");
        }
        // Filled first, then held (as every pickler writes non-recursive data): fine.
        let v = run(b"\x80\x02]q\x00K\x01ah\x00\x85.").unwrap().items().unwrap();
        assert_eq!(v[0].items().unwrap().len(), 1);
    }

    #[test]
    fn limits_are_one_line_errors() {
        let repeat = |body: &[u8], n: usize| {
            let mut p = b"\x80\x02N".to_vec();
            p.extend(body.repeat(n));
            p.push(b'.');
            p
        };
        for (p, needle) in [
            (repeat(b"N", MAX_STACK + 1), "stack exceeds 100000 items at opcode 0x4e"),
            (repeat(b"(", MAX_STACK + 1), "stack exceeds"),
            (repeat(b"\x94", MAX_MEMO + 1), "memo exceeds 100000 entries"),
            (repeat(b"N0", MAX_OPS as usize), "more than 2000000 opcodes"),
        ] {
            let e = run(&p).unwrap_err().to_string();
            assert!(e.contains(needle), "{e}");
        }
        let mut p = b"\x80\x02".to_vec();
        for _ in 0..65 {
            p.extend(b"B\x00\x00\x10\x00");
            p.extend(vec![0u8; 1 << 20]);
            p.push(b'0');
        }
        assert!(run(&p).unwrap_err().to_string().contains("strings exceed"));
    }

    #[test]
    fn contiguity() {
        let s = StorageRef { key: "0".into(), dtype: DType::F32, size: 16, view_offset: 0 };
        let t = TensorRef { storage: s, offset: 0, shape: vec![2, 3], stride: vec![1, 2] };
        assert!(t.check_contiguous("w").unwrap_err().to_string().contains("not contiguous"));
    }

    #[test]
    fn half_conversions() {
        let one_f16 = half::f16::from_f32(1.5).to_le_bytes();
        let one_bf16 = half::bf16::from_f32(-2.0).to_le_bytes();
        assert_eq!(DType::F16.to_f32(&one_f16), vec![1.5]);
        assert_eq!(DType::BF16.to_f32(&one_bf16), vec![-2.0]);
    }
}
