//! HPACK (RFC 7541): a byte-level encoder for crafted request field blocks, and a complete,
//! strict decoder (static table, dynamic table with eviction, Huffman, size updates) for the
//! server's field blocks, so that response checks read exactly what was sent.

use std::collections::VecDeque;

use super::huffman;

/// One decoded field line: name and value octets.
pub(crate) type Field = (Vec<u8>, Vec<u8>);

/// The static table (RFC 7541 Appendix A); index 1 is the first entry.
pub(crate) const STATIC: [(&str, &str); 61] = [
    (":authority", ""),
    (":method", "GET"),
    (":method", "POST"),
    (":path", "/"),
    (":path", "/index.html"),
    (":scheme", "http"),
    (":scheme", "https"),
    (":status", "200"),
    (":status", "204"),
    (":status", "206"),
    (":status", "304"),
    (":status", "400"),
    (":status", "404"),
    (":status", "500"),
    ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"),
    ("accept-language", ""),
    ("accept-ranges", ""),
    ("accept", ""),
    ("access-control-allow-origin", ""),
    ("age", ""),
    ("allow", ""),
    ("authorization", ""),
    ("cache-control", ""),
    ("content-disposition", ""),
    ("content-encoding", ""),
    ("content-language", ""),
    ("content-length", ""),
    ("content-location", ""),
    ("content-range", ""),
    ("content-type", ""),
    ("cookie", ""),
    ("date", ""),
    ("etag", ""),
    ("expect", ""),
    ("expires", ""),
    ("from", ""),
    ("host", ""),
    ("if-match", ""),
    ("if-modified-since", ""),
    ("if-none-match", ""),
    ("if-range", ""),
    ("if-unmodified-since", ""),
    ("last-modified", ""),
    ("link", ""),
    ("location", ""),
    ("max-forwards", ""),
    ("proxy-authenticate", ""),
    ("proxy-authorization", ""),
    ("range", ""),
    ("referer", ""),
    ("refresh", ""),
    ("retry-after", ""),
    ("server", ""),
    ("set-cookie", ""),
    ("strict-transport-security", ""),
    ("transfer-encoding", ""),
    ("user-agent", ""),
    ("vary", ""),
    ("via", ""),
    ("www-authenticate", ""),
];

/// Per-entry overhead counted in the dynamic table size (RFC 7541 §4.1).
const ENTRY_OVERHEAD: usize = 32;

/// Builds a field block representation by representation (RFC 7541 §6). Every method
/// appends exactly what its name says, valid or not.
#[derive(Debug, Clone, Default)]
pub(crate) struct Block {
    bytes: Vec<u8>,
}

impl Block {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Indexed field line (§6.1).
    pub(crate) fn indexed(mut self, index: usize) -> Self {
        integer(&mut self.bytes, 0x80, 7, index);
        self
    }

    /// Literal field line without indexing, new name, plain strings (§6.2.2).
    pub(crate) fn literal(mut self, name: &[u8], value: &[u8]) -> Self {
        self.bytes.push(0x00);
        string(&mut self.bytes, name, false);
        string(&mut self.bytes, value, false);
        self
    }

    /// Literal field line without indexing, name from table entry `index` (§6.2.2).
    pub(crate) fn literal_indexed_name(mut self, index: usize, value: &[u8]) -> Self {
        integer(&mut self.bytes, 0x00, 4, index);
        string(&mut self.bytes, value, false);
        self
    }

    /// Literal field line never indexed, new name (§6.2.3).
    pub(crate) fn never_indexed(mut self, name: &[u8], value: &[u8]) -> Self {
        self.bytes.push(0x10);
        string(&mut self.bytes, name, false);
        string(&mut self.bytes, value, false);
        self
    }

    /// Literal field line with incremental indexing, new name (§6.2.1): the decoder adds it
    /// to its dynamic table.
    pub(crate) fn incremental(mut self, name: &[u8], value: &[u8]) -> Self {
        self.bytes.push(0x40);
        string(&mut self.bytes, name, false);
        string(&mut self.bytes, value, false);
        self
    }

    /// Literal field line without indexing, new name, both strings Huffman-encoded.
    pub(crate) fn huffman(mut self, name: &[u8], value: &[u8]) -> Self {
        self.bytes.push(0x00);
        string(&mut self.bytes, name, true);
        string(&mut self.bytes, value, true);
        self
    }

    /// Dynamic table size update (§6.3).
    pub(crate) fn size_update(mut self, size: usize) -> Self {
        integer(&mut self.bytes, 0x20, 5, size);
        self
    }

    /// Arbitrary octets.
    pub(crate) fn raw(mut self, bytes: &[u8]) -> Self {
        self.bytes.extend_from_slice(bytes);
        self
    }

    /// Each field as an indexed line when the static table holds it exactly, otherwise as
    /// a literal without indexing (with an indexed name when the table has the name).
    pub(crate) fn fields(mut self, fields: &[(&str, &str)]) -> Self {
        for (name, value) in fields {
            let exact = STATIC.iter().position(|e| e == &(*name, *value));
            let named = STATIC.iter().position(|e| e.0 == *name);
            self = match (exact, named) {
                (Some(i), _) => self.indexed(i + 1),
                (None, Some(i)) => self.literal_indexed_name(i + 1, value.as_bytes()),
                (None, None) => self.literal(name.as_bytes(), value.as_bytes()),
            };
        }
        self
    }

    pub(crate) fn bytes(self) -> Vec<u8> {
        self.bytes
    }
}

/// Appends an integer with an `n`-bit prefix (RFC 7541 §5.1); `first` holds the bits
/// above the prefix.
fn integer(out: &mut Vec<u8>, first: u8, n: u32, value: usize) {
    let max = (1usize << n) - 1;
    if value < max {
        out.push(first | value as u8);
        return;
    }
    out.push(first | max as u8);
    let mut rest = value - max;
    while rest >= 128 {
        out.push((rest % 128) as u8 | 0x80);
        rest /= 128;
    }
    out.push(rest as u8);
}

fn string(out: &mut Vec<u8>, text: &[u8], huffman: bool) {
    if huffman {
        let coded = huffman::encode(text);
        integer(out, 0x80, 7, coded.len());
        out.extend_from_slice(&coded);
    } else {
        integer(out, 0x00, 7, text.len());
        out.extend_from_slice(text);
    }
}

/// The decoding side of one connection: it must see every field block the server sends, in
/// order, because they share the dynamic table.
#[derive(Debug)]
pub(crate) struct Decoder {
    /// Newest entry first.
    table: VecDeque<Field>,
    size: usize,
    /// Maximum size chosen by the encoder (last size update, initially the setting).
    max: usize,
    /// SETTINGS_HEADER_TABLE_SIZE as acknowledged by the server: the bound for updates.
    limit: usize,
    /// Set once the server acknowledged a lower limit: the next block must start with an
    /// update to at most `limit` (RFC 9113 §4.3.1).
    update_required: bool,
}

impl Default for Decoder {
    fn default() -> Self {
        Self {
            table: VecDeque::new(),
            size: 0,
            max: 4096,
            limit: 4096,
            update_required: false,
        }
    }
}

impl Decoder {
    /// The server acknowledged SETTINGS_HEADER_TABLE_SIZE = `limit`.
    pub(crate) fn set_limit(&mut self, limit: usize) {
        if limit < self.max {
            self.update_required = true;
        }
        self.limit = limit;
    }

    /// Decodes one complete field block.
    pub(crate) fn decode(&mut self, block: &[u8]) -> Result<Vec<Field>, String> {
        let mut at = 0;
        let mut fields = Vec::new();
        let mut leading = true;
        while at < block.len() {
            let first = block[at];
            if first & 0xe0 == 0x20 {
                // RFC 7541 §4.2: updates come first in a block.
                if !leading {
                    return Err("dynamic table size update after a field line".into());
                }
                let size = read_integer(block, &mut at, 5)?;
                if size > self.limit {
                    return Err(format!(
                        "dynamic table size update to {size} above the limit {}",
                        self.limit
                    ));
                }
                self.max = size;
                self.update_required = false;
                self.evict(0);
                continue;
            }
            if self.update_required {
                return Err(format!(
                    "field block does not start with a dynamic table size update to at most \
                     {} after SETTINGS_HEADER_TABLE_SIZE was lowered",
                    self.limit
                ));
            }
            leading = false;
            if first & 0x80 != 0 {
                let index = read_integer(block, &mut at, 7)?;
                fields.push(self.entry(index)?);
                continue;
            }
            let (prefix, add) = if first & 0xc0 == 0x40 {
                (6, true)
            } else {
                (4, false)
            };
            let index = read_integer(block, &mut at, prefix)?;
            let name = if index == 0 {
                read_string(block, &mut at)?
            } else {
                self.entry(index)?.0
            };
            let value = read_string(block, &mut at)?;
            if add {
                self.insert((name.clone(), value.clone()));
            }
            fields.push((name, value));
        }
        if self.update_required {
            return Err("empty field block where a dynamic table size update was due".into());
        }
        Ok(fields)
    }

    fn entry(&self, index: usize) -> Result<Field, String> {
        match index {
            0 => Err("index 0".into()),
            i if i <= STATIC.len() => {
                let (n, v) = STATIC[i - 1];
                Ok((n.as_bytes().to_vec(), v.as_bytes().to_vec()))
            }
            i => self
                .table
                .get(i - STATIC.len() - 1)
                .cloned()
                .ok_or_else(|| {
                    format!("index {i} beyond the table ({} dynamic)", self.table.len())
                }),
        }
    }

    fn insert(&mut self, field: Field) {
        let size = field.0.len() + field.1.len() + ENTRY_OVERHEAD;
        if size > self.max {
            // RFC 7541 §4.4: an entry larger than the table empties it.
            self.table.clear();
            self.size = 0;
            return;
        }
        self.evict(size);
        self.size += size;
        self.table.push_front(field);
    }

    /// Evicts oldest entries until `room` more octets fit under `max`.
    fn evict(&mut self, room: usize) {
        while self.size + room > self.max {
            let Some((n, v)) = self.table.pop_back() else {
                self.size = 0;
                return;
            };
            self.size -= n.len() + v.len() + ENTRY_OVERHEAD;
        }
    }
}

/// Reads an integer with an `n`-bit prefix (RFC 7541 §5.1), rejecting truncation and
/// values that do not fit comfortably in 32 bits.
fn read_integer(block: &[u8], at: &mut usize, n: u32) -> Result<usize, String> {
    let max = (1usize << n) - 1;
    let first = *block.get(*at).ok_or("truncated integer")?;
    *at += 1;
    let mut value = usize::from(first) & max;
    if value < max {
        return Ok(value);
    }
    let mut shift = 0;
    loop {
        let byte = *block.get(*at).ok_or("truncated integer")?;
        *at += 1;
        value += usize::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
        shift += 7;
        if shift > 28 {
            return Err("integer too large".into());
        }
    }
}

fn read_string(block: &[u8], at: &mut usize) -> Result<Vec<u8>, String> {
    let huffman = block.get(*at).ok_or("truncated string")? & 0x80 != 0;
    let len = read_integer(block, at, 7)?;
    let end = at
        .checked_add(len)
        .filter(|end| *end <= block.len())
        .ok_or_else(|| format!("string of {len} octets runs past the block"))?;
    let raw = &block[*at..end];
    *at = end;
    if huffman {
        huffman::decode(raw)
    } else {
        Ok(raw.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(fields: &[Field]) -> Vec<(String, String)> {
        fields
            .iter()
            .map(|(n, v)| {
                (
                    String::from_utf8_lossy(n).into_owned(),
                    String::from_utf8_lossy(v).into_owned(),
                )
            })
            .collect()
    }

    /// RFC 7541 Appendix C.6: three responses with Huffman coding and a 256-octet table,
    /// including evictions.
    #[test]
    fn rfc_response_examples() {
        let mut decoder = Decoder {
            max: 256,
            ..Decoder::default()
        };
        let hex = |s: &str| -> Vec<u8> {
            let digits: Vec<u8> = s.bytes().filter(u8::is_ascii_hexdigit).collect();
            digits
                .chunks(2)
                .map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap())
                .collect()
        };
        let first = decoder
            .decode(&hex(
                "4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6 \
                 2d1b ff6e 919d 29ad 1718 63c7 8f0b 97c8 e9ae 82ae 43d3",
            ))
            .unwrap();
        assert_eq!(
            text(&first)[..2],
            [
                (":status".into(), "302".into()),
                ("cache-control".into(), "private".into())
            ]
        );
        let second = decoder.decode(&hex("4883 640e ff c1 c0 bf")).unwrap();
        assert_eq!(text(&second)[0], (":status".into(), "307".into()));
        assert_eq!(
            text(&second)[3],
            ("location".into(), "https://www.example.com".into())
        );
        let third = decoder
            .decode(&hex(
                "88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a 839b d9ab \
                 77ad 94e7 821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f \
                 9587 3160 65c0 03ed 4ee5 b106 3d50 07",
            ))
            .unwrap();
        assert_eq!(
            text(&third)[5],
            (
                "set-cookie".into(),
                "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1".into()
            )
        );
        assert_eq!(decoder.size, 215);
    }

    #[test]
    fn encoder_output_decodes() {
        let block = Block::new()
            .fields(&[(":method", "GET"), (":path", "/x"), ("x-a", "1")])
            .never_indexed(b"x-b", b"2")
            .incremental(b"x-c", b"3")
            .huffman(b"x-d", b"four")
            .indexed(62)
            .bytes();
        let fields = Decoder::default().decode(&block).unwrap();
        let names: Vec<String> = text(&fields)
            .into_iter()
            .map(|(n, v)| n + "=" + &v)
            .collect();
        assert_eq!(
            names,
            [
                ":method=GET",
                ":path=/x",
                "x-a=1",
                "x-b=2",
                "x-c=3",
                "x-d=four",
                "x-c=3"
            ]
        );
    }

    #[test]
    fn decoding_errors() {
        let mut d = Decoder::default();
        assert!(d.decode(&[0x80]).is_err(), "index 0");
        assert!(d.decode(&[0xbe]).is_err(), "index 62 with an empty table");
        assert!(d.decode(&Block::new().size_update(4097).bytes()).is_err());
        assert!(d.decode(&[0x82, 0x20]).is_err(), "update after a field");
        assert!(d.decode(&[0x00, 0x05, b'a']).is_err(), "truncated string");
        d.set_limit(0);
        assert!(d.decode(&[0x82]).is_err(), "missing size update");
        assert!(d.decode(&[0x20, 0x82]).is_ok());
    }
}
