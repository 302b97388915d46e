import Tensor

/// Writes a header exactly as the reference implementation does (`serde_json::to_string`
/// of its `Metadata`, then space padding), so that our files are byte-identical to
/// `safetensors.torch.save_file` / `safetensors.numpy.save_file` output for the same input.
///
/// Facts this relies on (huggingface/safetensors `tensor.rs`, serde_json `ser.rs`):
/// - compact JSON, no spaces; `__metadata__` first (omitted when there is no metadata),
///   then one entry per tensor in data order, each `{"dtype":..,"shape":[..],"data_offsets":[b,e]}`;
/// - strings escape `"` `\` and U+0000...U+001F only (`\b \t \n \f \r` short forms, others
///   `\u00xx` with lowercase hex); everything else, including non-ASCII, is raw UTF-8;
/// - the header is padded with spaces to a multiple of 8 bytes.
///
/// One difference cannot be avoided: the reference stores metadata in a Rust `HashMap`, so
/// with two or more metadata keys its order is random per process. We write metadata keys
/// sorted by UTF-8 bytes; files are byte-identical when there are 0 or 1 metadata keys.
enum HeaderEncoder {
    struct Entry {
        let name: String
        let dtype: DType
        let shape: [Int]
        let offsets: (Int, Int)
    }

    /// The padded header (without the length prefix).
    static func encode(metadata: [String: String], entries: [Entry]) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(64 + entries.count * 96)
        out.append(UInt8(ascii: "{"))
        var first = true
        if !metadata.isEmpty {
            appendString(SafeTensorsFormat.metadataKey, to: &out)
            out.append(contentsOf: Array(":{".utf8))
            for (i, key) in metadata.keys.sorted(by: utf8Precedes).enumerated() {
                if i > 0 { out.append(UInt8(ascii: ",")) }
                appendString(key, to: &out)
                out.append(UInt8(ascii: ":"))
                appendString(metadata[key]!, to: &out)
            }
            out.append(UInt8(ascii: "}"))
            first = false
        }
        for entry in entries {
            if !first { out.append(UInt8(ascii: ",")) }
            first = false
            appendString(entry.name, to: &out)
            out.append(contentsOf: Array(":{\"dtype\":".utf8))
            appendString(entry.dtype.rawValue, to: &out)
            out.append(contentsOf: Array(",\"shape\":[".utf8))
            out.append(contentsOf: Array(entry.shape.map(String.init).joined(separator: ",").utf8))
            out.append(contentsOf: Array("],\"data_offsets\":[\(entry.offsets.0),\(entry.offsets.1)]}".utf8))
        }
        out.append(UInt8(ascii: "}"))
        let alignment = SafeTensorsFormat.headerAlignment
        let padded = (out.count + alignment - 1) / alignment * alignment
        out.append(contentsOf: repeatElement(UInt8(ascii: " "), count: padded - out.count))
        return out
    }

    private static let hexDigits = Array("0123456789abcdef".utf8)

    /// `s` as a JSON string, escaped as serde_json escapes.
    static func appendString(_ s: String, to out: inout [UInt8]) {
        out.append(UInt8(ascii: "\""))
        for byte in s.utf8 {
            switch byte {
            case UInt8(ascii: "\""): out.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "\"")])
            case UInt8(ascii: "\\"): out.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "\\")])
            case 0x08: out.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "b")])
            case 0x09: out.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "t")])
            case 0x0A: out.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "n")])
            case 0x0C: out.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "f")])
            case 0x0D: out.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "r")])
            case 0..<0x20:
                out.append(contentsOf: Array("\\u00".utf8))
                out.append(hexDigits[Int(byte >> 4)])
                out.append(hexDigits[Int(byte & 0xF)])
            default: out.append(byte)
            }
        }
        out.append(UInt8(ascii: "\""))
    }
}
