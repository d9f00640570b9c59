//! Raw records of one partition, copied into one arena as they are polled (no allocation per
//! event), and the records that could not be loaded.

const NO_TS: i64 = i64::MIN;

/// Raw records of one partition, in offset order, copied into one arena.
#[derive(Debug, Default)]
pub struct RawChunk {
    data: Vec<u8>,
    /// Per record: (payload start, payload end, key start, key end) in `data`; a missing
    /// payload or key has `start == u32::MAX`.
    spans: Vec<[u32; 4]>,
    pub(crate) offsets: Vec<i64>,
    timestamps: Vec<i64>,
}

impl RawChunk {
    pub fn push(
        &mut self,
        offset: i64,
        timestamp_ms: Option<i64>,
        key: Option<&[u8]>,
        payload: Option<&[u8]>,
    ) {
        let mut put = |b: Option<&[u8]>| match b {
            Some(b) => {
                let s = self.data.len() as u32;
                self.data.extend_from_slice(b);
                (s, self.data.len() as u32)
            }
            None => (u32::MAX, 0),
        };
        let (ps, pe) = put(payload);
        let (ks, ke) = put(key);
        self.spans.push([ps, pe, ks, ke]);
        self.offsets.push(offset);
        self.timestamps.push(timestamp_ms.unwrap_or(NO_TS));
    }

    pub fn len(&self) -> usize {
        self.offsets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.offsets.is_empty()
    }

    pub fn bytes(&self) -> usize {
        self.data.len()
    }

    pub fn first_offset(&self) -> Option<i64> {
        self.offsets.first().copied()
    }

    pub fn clear(&mut self) {
        self.data.clear();
        self.spans.clear();
        self.offsets.clear();
        self.timestamps.clear();
    }

    fn slice(&self, s: u32, e: u32) -> Option<&[u8]> {
        (s != u32::MAX).then(|| &self.data[s as usize..e as usize])
    }

    pub(crate) fn payload(&self, i: usize) -> Option<&[u8]> {
        let [s, e, _, _] = self.spans[i];
        self.slice(s, e)
    }

    pub(crate) fn key(&self, i: usize) -> Option<&[u8]> {
        let [_, _, s, e] = self.spans[i];
        self.slice(s, e)
    }

    pub(crate) fn timestamp(&self, i: usize) -> Option<i64> {
        let t = self.timestamps[i];
        (t != NO_TS).then_some(t)
    }

    pub(crate) fn dead(&self, i: usize, error: String) -> DeadRecord {
        DeadRecord {
            offset: self.offsets[i],
            kafka_timestamp: self.timestamp(i),
            key: self.key(i).map(<[u8]>::to_vec),
            payload: self.payload(i).map(<[u8]>::to_vec),
            error,
        }
    }
}

/// A record that could not be loaded, kept with everything needed to replay it.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadRecord {
    pub offset: i64,
    pub kafka_timestamp: Option<i64>,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    pub error: String,
}
