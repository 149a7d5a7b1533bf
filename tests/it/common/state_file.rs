//! A `--resume` state file taken apart, for tests that damage it in ways `resume::to_bytes`
//! cannot write.

/// The raw tensors and record of a state file, to damage what `to_bytes` cannot write (times
/// that are no `Duration`, counters that do not match the tensors, extra tensors).
pub struct RawState {
    pub tensors: Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)>,
    pub record: serde_json::Value,
}

impl RawState {
    pub fn parse(bytes: &[u8]) -> RawState {
        let st = safetensors::SafeTensors::deserialize(bytes).unwrap();
        let (_, meta) = safetensors::SafeTensors::read_metadata(bytes).unwrap();
        let record = serde_json::from_str(&meta.metadata().as_ref().unwrap()[neural_style::resume::META_KEY]).unwrap();
        let mut tensors: Vec<_> = st.tensors().into_iter().map(|(n, t)| (n, t.dtype(), t.shape().to_vec(), t.data().to_vec())).collect();
        tensors.sort_by(|a, b| a.0.cmp(&b.0));
        RawState { tensors, record }
    }
    pub fn get(&mut self, name: &str) -> &mut (String, safetensors::Dtype, Vec<usize>, Vec<u8>) {
        self.tensors.iter_mut().find(|t| t.0 == name).unwrap_or_else(|| panic!("no {name}"))
    }
    pub fn f64s(&mut self, name: &str) -> Vec<f64> {
        self.get(name).3.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap())).collect()
    }
    pub fn set_f64s(&mut self, name: &str, v: &[f64]) {
        let t = self.get(name);
        if t.2.len() == 2 {
            t.2 = vec![v.len() / 5, 5];
        } else {
            t.2 = vec![v.len()];
        }
        t.3 = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    }
    pub fn f32s(&mut self, name: &str) -> Vec<f32> {
        self.get(name).3.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()
    }
    pub fn set_f32s(&mut self, name: &str, v: &[f32]) {
        let t = self.get(name);
        t.2 = vec![v.len()];
        t.3 = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    }
    pub fn put_f32s(&mut self, name: &str, v: &[f32]) {
        self.tensors.retain(|t| t.0 != name);
        self.tensors.push((name.into(), safetensors::Dtype::F32, vec![v.len()], v.iter().flat_map(|x| x.to_le_bytes()).collect()));
    }
    /// Sets the f64 at `k` of tensor `name`.
    pub fn set_f64(mut self, name: &str, k: usize, v: f64) -> RawState {
        self.get(name).3[8 * k..8 * k + 8].copy_from_slice(&v.to_le_bytes());
        self
    }
    pub fn bytes(&self) -> Vec<u8> {
        let views: Vec<_> = self.tensors.iter().map(|(n, d, s, b)| (n.clone(), safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap())).collect();
        let meta = std::collections::HashMap::from([(neural_style::resume::META_KEY.to_string(), self.record.to_string())]);
        safetensors::serialize(views, Some(meta)).unwrap()
    }
}
