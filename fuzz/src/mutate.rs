//! Byte-level mutations, stacked 1–8 at a time (AFL's "havoc" stage, in small): bit and
//! byte flips, interesting integers and varints, inserts, deletes, duplicated ranges,
//! splices with another corpus entry, dictionary tokens, number replacement, deep
//! nesting and truncation.

use crate::rng::Rng;

/// Integers worth writing over bytes (little- and big-endian, 1–8 bytes).
const INTERESTING: &[u64] = &[
    0,
    1,
    0x7f,
    0x80,
    0xff,
    0x7fff,
    0x8000,
    0xffff,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_ffff,
    i64::MAX as u64,
    i64::MIN as u64,
    u64::MAX,
];

/// Protobuf varints: i64::MAX, u64::MAX (-1 as int64), overlong zero, 2^32 lengths, an
/// unterminated varint.
const VARINTS: &[&[u8]] = &[
    &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f],
    &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
    &[0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00],
    &[0xff, 0xff, 0xff, 0xff, 0x0f],
    &[0x80, 0x80, 0x80, 0x80, 0x10],
    &[0xff, 0xff, 0xff, 0x7f],
    &[0x80, 0x80, 0x80],
    &[
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    ],
];

/// Texts that replace a number in text formats.
const NUMBERS: &[&str] = &[
    "0",
    "-1",
    "-0",
    "1e308",
    "-1e308",
    "1e-400",
    "1e400",
    "9223372036854775807",
    "9223372036854775808",
    "-9223372036854775808",
    "18446744073709551616",
    "4294967296",
    "0x7fffffffffffffff",
    "0.000000001",
    "NaN",
    "+Inf",
    "-Inf",
    "1_000",
    "99999999999999999999999999999999",
    "1e",
    ".",
];

/// Characters that are structure in most text formats.
const SPECIALS: &[u8] = b"(){}[],=\"'`\\:#-@!~*+/%^<>|&;\n\r\t $.?0\x00\xff";

pub struct Mutator<'a> {
    pub rng: &'a mut Rng,
    /// Tokens of the target's input language.
    pub dict: &'a [&'a [u8]],
    /// Openers repeated by the deep-nesting mutation (`(`, `[`, `{`, `sum(` …).
    pub nest: &'a [&'a [u8]],
    pub max_len: usize,
}

impl Mutator<'_> {
    /// A mutated copy of `input`; `other` is another corpus entry (for splicing).
    pub fn mutate(&mut self, input: &[u8], other: &[u8]) -> Vec<u8> {
        let mut data = input.to_vec();
        let rounds = 1 << self.rng.below(4);
        for _ in 0..rounds {
            self.once(&mut data, other);
        }
        data.truncate(self.max_len);
        data
    }

    fn pos(&mut self, data: &[u8]) -> usize {
        self.rng.below(data.len() + 1)
    }

    /// A random range `start..end` inside `data` (empty when `data` is).
    fn range(&mut self, len: usize) -> (usize, usize) {
        if len == 0 {
            return (0, 0);
        }
        let start = self.rng.below(len);
        let n = self.rng.small_len(len - start);
        (start, start + n)
    }

    fn once(&mut self, data: &mut Vec<u8>, other: &[u8]) {
        match self.rng.below(20) {
            0 if !data.is_empty() => {
                let at = self.rng.below(data.len());
                data[at] ^= 1 << self.rng.below(8);
            }
            1 if !data.is_empty() => {
                let at = self.rng.below(data.len());
                data[at] = self.rng.next_u64() as u8;
            }
            2 if !data.is_empty() => {
                let value = *self.rng.pick(INTERESTING);
                let width = *self.rng.pick(&[1usize, 2, 4, 8]);
                let bytes = if self.rng.chance(1, 2) {
                    value.to_le_bytes()
                } else {
                    value.to_be_bytes()
                };
                let bytes = if self.rng.chance(1, 2) {
                    &bytes[..width]
                } else {
                    &bytes[8 - width..]
                };
                let at = self.rng.below(data.len());
                for (i, b) in bytes.iter().enumerate() {
                    if let Some(slot) = data.get_mut(at + i) {
                        *slot = *b;
                    }
                }
            }
            3 => {
                let at = self.pos(data);
                let n = self.rng.small_len(16);
                let bytes: Vec<u8> = (0..n).map(|_| self.rng.next_u64() as u8).collect();
                data.splice(at..at, bytes);
            }
            4 if !data.is_empty() => {
                let (start, end) = self.range(data.len());
                data.drain(start..end);
            }
            5 if !data.is_empty() => {
                // Duplicate a range, possibly many times (long runs, repeated fields).
                let (start, end) = self.range(data.len());
                let chunk = data[start..end].to_vec();
                let times = *self.rng.pick(&[1usize, 1, 2, 4, 16, 128]);
                let at = self.pos(data);
                let repeated = chunk.repeat(times);
                data.splice(at..at, repeated);
            }
            6 if !other.is_empty() => {
                // Splice: a prefix of this entry, a suffix of the other.
                let cut = self.pos(data);
                let from = self.rng.below(other.len());
                data.truncate(cut);
                data.extend_from_slice(&other[from..]);
            }
            7 if !other.is_empty() => {
                let (start, end) = self.range(other.len());
                let at = self.pos(data);
                data.splice(at..at, other[start..end].iter().copied());
            }
            8 | 9 if !self.dict.is_empty() => {
                let token = *self.rng.pick(self.dict);
                let at = self.pos(data);
                if self.rng.chance(1, 3) && at < data.len() {
                    let end = (at + token.len()).min(data.len());
                    data.splice(at..end, token.iter().copied());
                } else {
                    data.splice(at..at, token.iter().copied());
                }
            }
            10 => self.replace_number(data),
            11 => {
                // Deep nesting: an opener repeated many times, sometimes closed again.
                let opener: &[u8] = if self.nest.is_empty() {
                    b"("
                } else {
                    self.nest[self.rng.below(self.nest.len())]
                };
                let times = *self.rng.pick(&[8usize, 64, 200, 1000, 5000]);
                let at = self.pos(data);
                let run = opener.repeat(times);
                if self.rng.chance(1, 2) {
                    let closer: Vec<u8> = opener.iter().rev().filter_map(|b| closer(*b)).collect();
                    if !closer.is_empty() {
                        let tail = self.rng.below(data.len() - at + 1);
                        data.splice(at + tail..at + tail, closer.repeat(times));
                    }
                }
                data.splice(at..at, run);
            }
            12 if !data.is_empty() => {
                let at = self.rng.below(data.len());
                data.truncate(at);
            }
            13 => {
                let varint = *self.rng.pick(VARINTS);
                let at = self.pos(data);
                if self.rng.chance(1, 2) && at < data.len() {
                    let end = (at + varint.len()).min(data.len());
                    data.splice(at..end, varint.iter().copied());
                } else {
                    data.splice(at..at, varint.iter().copied());
                }
            }
            14 if data.len() >= 2 => {
                let a = self.rng.below(data.len());
                let b = self.rng.below(data.len());
                data.swap(a, b);
            }
            15 | 16 if !data.is_empty() => {
                let at = self.rng.below(data.len());
                data[at] = *self.rng.pick(SPECIALS);
            }
            17 => {
                let at = self.pos(data);
                let c = *self.rng.pick(SPECIALS);
                data.insert(at, c);
            }
            18 if !data.is_empty() && data.len() * 2 <= self.max_len => {
                let copy = data.clone();
                data.extend_from_slice(&copy);
            }
            19 if data.len() >= 2 => {
                // Overwrite one range with another range of the same input.
                let (start, end) = self.range(data.len());
                let chunk = data[start..end].to_vec();
                let at = self.rng.below(data.len());
                for (i, b) in chunk.into_iter().enumerate() {
                    if let Some(slot) = data.get_mut(at + i) {
                        *slot = b;
                    }
                }
            }
            _ => {
                let at = self.pos(data);
                data.insert(at, self.rng.next_u64() as u8);
            }
        }
    }

    /// Replaces an ASCII number near a random position by an interesting one (or inserts
    /// one when the input has no digits).
    fn replace_number(&mut self, data: &mut Vec<u8>) {
        let number = self.rng.pick(NUMBERS).as_bytes();
        let start_at = self.rng.below(data.len() + 1);
        let found = data[start_at..]
            .iter()
            .position(u8::is_ascii_digit)
            .map(|i| start_at + i)
            .or_else(|| data.iter().position(u8::is_ascii_digit));
        match found {
            Some(mut start) => {
                while start > 0 && (data[start - 1].is_ascii_digit() || data[start - 1] == b'.') {
                    start -= 1;
                }
                let mut end = start;
                while end < data.len()
                    && (data[end].is_ascii_digit() || matches!(data[end], b'.' | b'e' | b'_'))
                {
                    end += 1;
                }
                data.splice(start..end, number.iter().copied());
            }
            None => {
                let at = self.pos(data);
                data.splice(at..at, number.iter().copied());
            }
        }
    }
}

fn closer(opener: u8) -> Option<u8> {
    match opener {
        b'(' => Some(b')'),
        b'[' => Some(b']'),
        b'{' => Some(b'}'),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::Mutator;
    use crate::rng::Rng;

    #[test]
    fn mutations_stay_within_the_length_limit() {
        let mut rng = Rng::new(3);
        let mut mutator = Mutator {
            rng: &mut rng,
            dict: &[b"sum(", b"[5m]"],
            nest: &[b"("],
            max_len: 256,
        };
        let mut input = b"rate(x[5m])".to_vec();
        let mut changed = 0;
        for _ in 0..5000 {
            let next = mutator.mutate(&input, b"up{job=\"a\"} 1");
            assert!(next.len() <= 256);
            if next != input {
                changed += 1;
            }
            if !next.is_empty() {
                input = next;
            }
        }
        assert!(changed > 4000, "{changed}");
    }
}
