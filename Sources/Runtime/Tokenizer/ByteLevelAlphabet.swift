/// GPT-2/CLIP's reversible map from bytes to printable characters (`bytes_to_unicode`).
///
/// Printable Latin-1 bytes ('!'...'~', '¡'...'¬', '®'...'ÿ') map to themselves; the other 68
/// bytes map to U+0100, U+0101, … in byte order. The vocabulary's first 256 tokens are these
/// characters in that order (printable ones first), so a byte's base token id is its position.
enum ByteLevelAlphabet {
    /// Byte → its character, as a unicode scalar.
    static let scalarForByte: [Unicode.Scalar] = {
        var table = [Unicode.Scalar](repeating: " ", count: 256)
        for (byte, scalarValue) in orderedPairs { table[Int(byte)] = Unicode.Scalar(scalarValue)! }
        return table
    }()

    /// Character → byte (the inverse), for decoding.
    static let byteForScalar: [Unicode.Scalar: UInt8] = {
        var map = [Unicode.Scalar: UInt8]()
        for (byte, scalarValue) in orderedPairs { map[Unicode.Scalar(scalarValue)!] = byte }
        return map
    }()

    /// (byte, scalar value) in vocabulary order: printable bytes first, then the rest.
    static let orderedPairs: [(UInt8, UInt32)] = {
        let printable: [ClosedRange<UInt32>] = [0x21...0x7e, 0xa1...0xac, 0xae...0xff]
        var pairs: [(UInt8, UInt32)] = []
        var isPrintable = [Bool](repeating: false, count: 256)
        for range in printable {
            for value in range {
                pairs.append((UInt8(value), value))
                isPrintable[Int(value)] = true
            }
        }
        var next: UInt32 = 256
        for byte in 0..<256 where !isPrintable[byte] {
            pairs.append((UInt8(byte), next))
            next += 1
        }
        return pairs
    }()
}
