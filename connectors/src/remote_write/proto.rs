//! The `prompb` messages of remote_write 1.0, declared with prost derives
//! (field numbers from `prompb/remote.proto` and `prompb/types.proto`); `TimeSeries`
//! implements `prost::Message` by hand to keep its labels as sent.

use prost::encoding::WireType;
use prost::Message;

#[derive(Clone, PartialEq, prost::Message)]
pub struct WriteRequest {
    #[prost(message, repeated, tag = "1")]
    pub timeseries: Vec<TimeSeries>,
    #[prost(message, repeated, tag = "3")]
    pub metadata: Vec<MetricMetadata>,
}

/// A series with its samples. Its `Label` messages are kept as sent (each prefixed by its
/// length) in one buffer: a receiver hashes that buffer to find a series it has seen
/// before without decoding a single label (see `decode::SeriesInterner`), and decodes
/// them only for a new series. The other fields are prost's.
#[derive(Clone, PartialEq, Default, Debug)]
pub struct TimeSeries {
    pub labels_raw: Vec<u8>,
    pub samples: Vec<Sample>,
    pub exemplars: Vec<Exemplar>,
    /// Native histograms, kept undecoded: they are counted and skipped.
    pub histograms: Vec<Vec<u8>>,
}

impl TimeSeries {
    /// Appends a label (encoding it as the `Label` message senders write).
    pub fn push_label(&mut self, name: &str, value: &str) {
        let label = Label {
            name: name.to_string(),
            value: value.to_string(),
        };
        let bytes = label.encode_to_vec();
        prost::encoding::encode_varint(bytes.len() as u64, &mut self.labels_raw);
        self.labels_raw.extend_from_slice(&bytes);
    }

    /// Each label's encoded `Label` message, in the order sent.
    fn raw_labels(&self) -> impl Iterator<Item = &[u8]> {
        let mut rest = self.labels_raw.as_slice();
        std::iter::from_fn(move || {
            if rest.is_empty() {
                return None;
            }
            let len = prost::encoding::decode_varint(&mut rest).ok()? as usize;
            let (label, tail) = rest.split_at_checked(len)?;
            rest = tail;
            Some(label)
        })
    }

    /// The labels, decoded (names and values must be UTF-8).
    pub fn labels(&self) -> Result<Vec<Label>, prost::DecodeError> {
        self.raw_labels().map(Label::decode).collect()
    }
}

impl prost::Message for TimeSeries {
    fn encode_raw(&self, buf: &mut impl prost::bytes::BufMut) {
        for label in self.raw_labels() {
            prost::encoding::encode_key(1, WireType::LengthDelimited, buf);
            prost::encoding::encode_varint(label.len() as u64, buf);
            buf.put_slice(label);
        }
        prost::encoding::message::encode_repeated(2, &self.samples, buf);
        prost::encoding::message::encode_repeated(3, &self.exemplars, buf);
        prost::encoding::bytes::encode_repeated(4, &self.histograms, buf);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl prost::bytes::Buf,
        ctx: prost::encoding::DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        match tag {
            1 => {
                prost::encoding::check_wire_type(WireType::LengthDelimited, wire_type)?;
                let len = prost::encoding::decode_varint(buf)?;
                let len = usize::try_from(len)
                    .ok()
                    .filter(|len| *len <= buf.remaining())
                    .ok_or_else(|| {
                        #[allow(deprecated)]
                        prost::DecodeError::new("label length is past the end of the buffer")
                    })?;
                prost::encoding::encode_varint(len as u64, &mut self.labels_raw);
                let start = self.labels_raw.len();
                self.labels_raw.resize(start + len, 0);
                buf.copy_to_slice(&mut self.labels_raw[start..]);
                Ok(())
            }
            2 => prost::encoding::message::merge_repeated(wire_type, &mut self.samples, buf, ctx),
            3 => prost::encoding::message::merge_repeated(wire_type, &mut self.exemplars, buf, ctx),
            4 => prost::encoding::bytes::merge_repeated(wire_type, &mut self.histograms, buf, ctx),
            _ => prost::encoding::skip_field(wire_type, tag, buf, ctx),
        }
    }

    fn encoded_len(&self) -> usize {
        self.raw_labels()
            .map(|label| {
                prost::encoding::key_len(1)
                    + prost::encoding::encoded_len_varint(label.len() as u64)
                    + label.len()
            })
            .sum::<usize>()
            + prost::encoding::message::encoded_len_repeated(2, &self.samples)
            + prost::encoding::message::encoded_len_repeated(3, &self.exemplars)
            + prost::encoding::bytes::encoded_len_repeated(4, &self.histograms)
    }

    fn clear(&mut self) {
        self.labels_raw.clear();
        self.samples.clear();
        self.exemplars.clear();
        self.histograms.clear();
    }
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Label {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Sample {
    #[prost(double, tag = "1")]
    pub value: f64,
    #[prost(int64, tag = "2")]
    pub timestamp: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Exemplar {
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    #[prost(double, tag = "2")]
    pub value: f64,
    #[prost(int64, tag = "3")]
    pub timestamp: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct MetricMetadata {
    #[prost(int32, tag = "1")]
    pub r#type: i32,
    #[prost(string, tag = "2")]
    pub metric_family_name: String,
    #[prost(string, tag = "4")]
    pub help: String,
    #[prost(string, tag = "5")]
    pub unit: String,
}

/// `MetricMetadata.MetricType` names, as the metadata API prints them.
pub fn metric_type_name(value: i32) -> &'static str {
    match value {
        1 => "counter",
        2 => "gauge",
        3 => "histogram",
        4 => "gaugehistogram",
        5 => "summary",
        6 => "info",
        7 => "stateset",
        _ => "unknown",
    }
}
