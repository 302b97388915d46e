import Tensor

/// The validated content of a header.
struct ParsedHeader {
    /// `__metadata__` (empty when absent).
    var metadata: [String: String]
    /// Tensors in header order.
    var tensors: [TensorInfo]
    /// Position in `tensors` of each name.
    var indexByName: [String: Int]
}

/// A strict, schema-directed parser for a safetensors header.
///
/// Why not JSONSerialization: it silently keeps one of two duplicate keys, accepts some
/// non-JSON, and loses the position of errors. This parser reads exactly the JSON the format
/// allows (an object of tensor entries and `__metadata__`), reports the first broken rule with
/// its byte offset, and never recurses, so no input can exhaust the stack.
///
/// Equal keys are detected with Swift `String` equality, which is Unicode canonical
/// equivalence: two byte-different spellings of "é" count as a duplicate. That is stricter
/// than the reference implementation (byte equality) on purpose: a `[String: ...]` lookup
/// could not tell them apart.
struct HeaderParser {
    private let bytes: UnsafeRawBufferPointer
    private let file: String
    private var pos = 0
    /// The tensor whose entry is being parsed, named in errors.
    private var currentTensor: String?

    private init(bytes: UnsafeRawBufferPointer, file: String) {
        self.bytes = bytes
        self.file = file
    }

    /// Parses and validates `header` (the N bytes after the length prefix).
    ///
    /// - Parameters:
    ///   - dataStart: absolute file offset of the data section (8 + N).
    ///   - dataSectionSize: bytes from `dataStart` to the end of the file.
    static func parse(header: UnsafeRawBufferPointer, dataStart: Int, dataSectionSize: Int,
                      file: String) throws(SafeTensorsError) -> ParsedHeader {
        if let bad = firstInvalidUTF8Offset(header) {
            throw SafeTensorsError(file: file, rule: .headerNotUTF8(offset: bad))
        }
        var parser = HeaderParser(bytes: header, file: file)
        var parsed = try parser.parseTopLevel(dataStart: dataStart)
        try validateLayout(&parsed, dataSectionSize: dataSectionSize, file: file)
        return parsed
    }

    // MARK: - Structure

    private mutating func parseTopLevel(dataStart: Int) throws(SafeTensorsError) -> ParsedHeader {
        var result = ParsedHeader(metadata: [:], tensors: [], indexByName: [:])
        var sawMetadata = false
        skipWhitespace()
        guard peek() == UInt8(ascii: "{") else { throw error(.headerNotObject) }
        pos += 1
        skipWhitespace()
        if peek() == UInt8(ascii: "}") {
            pos += 1
        } else {
            while true {
                guard peek() == UInt8(ascii: "\"") else { throw syntax("expected a string key") }
                let key = try parseString()
                try expectColon()
                if key == SafeTensorsFormat.metadataKey {
                    guard !sawMetadata else { throw error(.duplicateKey(key)) }
                    sawMetadata = true
                    result.metadata = try parseMetadata()
                } else {
                    // The name → index map doubles as the duplicate check (one hash per name).
                    guard result.indexByName.updateValue(result.tensors.count, forKey: key) == nil else {
                        throw error(.duplicateKey(key))
                    }
                    currentTensor = key
                    result.tensors.append(try parseEntry(name: key, dataStart: dataStart))
                    currentTensor = nil
                }
                skipWhitespace()
                if peek() == UInt8(ascii: ",") { pos += 1; skipWhitespace(); continue }
                if peek() == UInt8(ascii: "}") { pos += 1; break }
                throw syntax("expected ',' or '}' after a header entry")
            }
        }
        skipWhitespace()
        guard pos == bytes.count else { throw syntax("unexpected characters after the header object") }
        return result
    }

    private mutating func parseMetadata() throws(SafeTensorsError) -> [String: String] {
        var metadata: [String: String] = [:]
        guard peek() == UInt8(ascii: "{") else { throw error(.metadataNotObject) }
        pos += 1
        skipWhitespace()
        if peek() == UInt8(ascii: "}") { pos += 1; return metadata }
        while true {
            guard peek() == UInt8(ascii: "\"") else { throw syntax("expected a string key in __metadata__") }
            let key = try parseString()
            try expectColon()
            guard peek() == UInt8(ascii: "\"") else { throw error(.metadataValueNotString(key: key)) }
            let value = try parseString()
            guard metadata.updateValue(value, forKey: key) == nil else { throw error(.duplicateMetadataKey(key)) }
            skipWhitespace()
            if peek() == UInt8(ascii: ",") { pos += 1; skipWhitespace(); continue }
            if peek() == UInt8(ascii: "}") { pos += 1; return metadata }
            throw syntax("expected ',' or '}' in __metadata__")
        }
    }

    private mutating func parseEntry(name: String, dataStart: Int) throws(SafeTensorsError) -> TensorInfo {
        guard peek() == UInt8(ascii: "{") else { throw error(.entryNotObject) }
        pos += 1
        skipWhitespace()
        var dtype: DType?
        var shape: [Int]?
        var offsets: [Int]?
        if peek() == UInt8(ascii: "}") {
            pos += 1
        } else {
            while true {
                guard peek() == UInt8(ascii: "\"") else { throw syntax("expected a string key in a tensor entry") }
                let field = try parseString()
                try expectColon()
                switch field {
                case "dtype":
                    guard dtype == nil else { throw error(.duplicateField(field)) }
                    dtype = try parseDType()
                case "shape":
                    guard shape == nil else { throw error(.duplicateField(field)) }
                    shape = try parseIntegerArray { .invalidShape(reason: $0) }
                case "data_offsets":
                    guard offsets == nil else { throw error(.duplicateField(field)) }
                    let pair = try parseIntegerArray { .invalidDataOffsets(reason: $0) }
                    guard pair.count == 2 else {
                        throw error(.invalidDataOffsets(reason: "expected 2 integers, found \(pair.count)"))
                    }
                    offsets = pair
                default:
                    throw error(.unexpectedField(field))
                }
                skipWhitespace()
                if peek() == UInt8(ascii: ",") { pos += 1; skipWhitespace(); continue }
                if peek() == UInt8(ascii: "}") { pos += 1; break }
                throw syntax("expected ',' or '}' in a tensor entry")
            }
        }
        guard let dtype else { throw error(.missingField("dtype")) }
        guard let shape else { throw error(.missingField("shape")) }
        guard let offsets else { throw error(.missingField("data_offsets")) }
        let (begin, end) = (offsets[0], offsets[1])
        guard end >= begin else { throw error(.offsetsReversed(begin: begin, end: end)) }
        // Element count × element size, checked: shape entries are each <= Int.max, but
        // their product may not be.
        var byteSize = dtype.byteSize
        for d in shape {
            let (product, overflow) = byteSize.multipliedReportingOverflow(by: d)
            guard !overflow else { throw error(.byteSizeOverflow(shape: shape, dtype: dtype.rawValue)) }
            byteSize = product
        }
        guard end - begin == byteSize else {
            throw error(.byteSizeMismatch(dtype: dtype.rawValue, shape: shape, expected: byteSize,
                                          begin: begin, end: end))
        }
        // Absolute offsets may still overflow for absurd `begin`; the layout check bounds
        // `end` by the file size, but that runs later, so check here too.
        let (absBegin, o1) = dataStart.addingReportingOverflow(begin)
        let (absEnd, o2) = dataStart.addingReportingOverflow(end)
        guard !o1 && !o2 else {
            throw error(.invalidDataOffsets(reason: "[\(begin), \(end)] lie beyond any file"))
        }
        return TensorInfo(name: name, dtype: dtype, shape: shape, dataOffsets: begin..<end,
                          fileRange: absBegin..<absEnd)
    }

    private mutating func parseDType() throws(SafeTensorsError) -> DType {
        guard peek() == UInt8(ascii: "\"") else { throw error(.dtypeNotString) }
        let name = try parseString()
        if let dtype = DType(rawValue: name) { return dtype }
        if SafeTensorsFormat.knownButUnsupportedDTypes.contains(name) { throw error(.unsupportedDType(name)) }
        throw error(.unknownDType(name))
    }

    /// `[i, j, ...]` of non-negative integers that fit in `Int`. `rule` builds the error
    /// for a value of the wrong kind (not an array, negative, fractional, too large).
    private mutating func parseIntegerArray(
        _ rule: (String) -> SafeTensorsError.Rule
    ) throws(SafeTensorsError) -> [Int] {
        guard peek() == UInt8(ascii: "[") else { throw error(rule("not an array")) }
        pos += 1
        skipWhitespace()
        var values: [Int] = []
        if peek() == UInt8(ascii: "]") { pos += 1; return values }
        while true {
            let index = values.count
            guard let c = peek(), c == UInt8(ascii: "-") || (c >= UInt8(ascii: "0") && c <= UInt8(ascii: "9")) else {
                throw error(rule("entry \(index) is not a number"))
            }
            switch try parseNumber() {
            case .integer(let v): values.append(v)
            case .negative: throw error(rule("entry \(index) is negative"))
            case .fractional: throw error(rule("entry \(index) is not an integer"))
            case .tooLarge: throw error(rule("entry \(index) is too large"))
            }
            skipWhitespace()
            if peek() == UInt8(ascii: ",") { pos += 1; skipWhitespace(); continue }
            if peek() == UInt8(ascii: "]") { pos += 1; return values }
            throw syntax("expected ',' or ']' in an array")
        }
    }

    // MARK: - Lexical

    private enum NumberValue { case integer(Int), negative, fractional, tooLarge }

    /// A JSON number (full grammar checked), classified for our only use: non-negative integers.
    private mutating func parseNumber() throws(SafeTensorsError) -> NumberValue {
        let isNegative = peek() == UInt8(ascii: "-")
        if isNegative { pos += 1 }
        guard let first = peek(), isDigit(first) else { throw syntax("invalid number") }
        var value = 0
        var tooLarge = false
        if first == UInt8(ascii: "0") {
            pos += 1
        } else {
            while let c = peek(), isDigit(c) {
                let (m, o1) = value.multipliedReportingOverflow(by: 10)
                let (a, o2) = m.addingReportingOverflow(Int(c - UInt8(ascii: "0")))
                if o1 || o2 { tooLarge = true } else { value = a }
                pos += 1
            }
        }
        var isFractional = false
        if peek() == UInt8(ascii: ".") {
            pos += 1
            guard let c = peek(), isDigit(c) else { throw syntax("invalid number") }
            while let c = peek(), isDigit(c) { pos += 1 }
            isFractional = true
        }
        if peek() == UInt8(ascii: "e") || peek() == UInt8(ascii: "E") {
            pos += 1
            if peek() == UInt8(ascii: "+") || peek() == UInt8(ascii: "-") { pos += 1 }
            guard let c = peek(), isDigit(c) else { throw syntax("invalid number") }
            while let c = peek(), isDigit(c) { pos += 1 }
            isFractional = true
        }
        if isNegative { return .negative }
        if isFractional { return .fractional }
        if tooLarge { return .tooLarge }
        return .integer(value)
    }

    /// A JSON string starting at the opening quote. The header is already known to be valid
    /// UTF-8, so decoding the unescaped bytes cannot repair (alter) anything.
    private mutating func parseString() throws(SafeTensorsError) -> String {
        pos += 1  // opening quote
        let start = pos
        // Fast path, 8 bytes at a time: skip words with no quote, backslash or control byte.
        while pos + 8 <= bytes.count {
            let word = UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: pos, as: UInt64.self))
            if swarHasQuoteBackslashOrControl(word) { break }
            pos += 8
        }
        // Then byte by byte up to the closing quote, or to the first escape (slow path).
        while pos < bytes.count {
            let c = bytes[pos]
            if c == UInt8(ascii: "\"") {
                let s = String(decoding: UnsafeRawBufferPointer(rebasing: bytes[start..<pos]), as: UTF8.self)
                pos += 1
                return s
            }
            if c == UInt8(ascii: "\\") { break }
            if c < 0x20 { throw syntax("unescaped control character in a string") }
            pos += 1
        }
        var buffer = [UInt8](UnsafeRawBufferPointer(rebasing: bytes[start..<pos]))
        while true {
            guard pos < bytes.count else { throw syntax("unterminated string") }
            let c = bytes[pos]
            if c == UInt8(ascii: "\"") { pos += 1; break }
            if c < 0x20 { throw syntax("unescaped control character in a string") }
            if c != UInt8(ascii: "\\") { buffer.append(c); pos += 1; continue }
            pos += 1
            guard pos < bytes.count else { throw syntax("unterminated string") }
            let e = bytes[pos]
            pos += 1
            switch e {
            case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): buffer.append(e)
            case UInt8(ascii: "b"): buffer.append(0x08)
            case UInt8(ascii: "f"): buffer.append(0x0C)
            case UInt8(ascii: "n"): buffer.append(0x0A)
            case UInt8(ascii: "r"): buffer.append(0x0D)
            case UInt8(ascii: "t"): buffer.append(0x09)
            case UInt8(ascii: "u"):
                var scalar = try parseHex4()
                if (0xD800...0xDBFF).contains(scalar) {
                    // A high surrogate must be followed by an escaped low surrogate.
                    guard pos + 1 < bytes.count, bytes[pos] == UInt8(ascii: "\\"), bytes[pos + 1] == UInt8(ascii: "u")
                    else { throw syntax("unpaired surrogate in a \\u escape") }
                    pos += 2
                    let low = try parseHex4()
                    guard (0xDC00...0xDFFF).contains(low) else { throw syntax("unpaired surrogate in a \\u escape") }
                    scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                } else if (0xDC00...0xDFFF).contains(scalar) {
                    throw syntax("unpaired surrogate in a \\u escape")
                }
                // Not a surrogate (checked above), so always a valid scalar.
                buffer.append(contentsOf: Array(String(Unicode.Scalar(scalar)!).utf8))
            default:
                throw syntax("invalid escape in a string")
            }
        }
        return String(decoding: buffer, as: UTF8.self)
    }

    private mutating func parseHex4() throws(SafeTensorsError) -> UInt32 {
        guard pos + 4 <= bytes.count else { throw syntax("truncated \\u escape") }
        var v: UInt32 = 0
        for _ in 0..<4 {
            let c = bytes[pos]
            let digit: UInt8
            switch c {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = c - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = c - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = c - UInt8(ascii: "A") + 10
            default: throw syntax("invalid \\u escape")
            }
            v = v << 4 | UInt32(digit)
            pos += 1
        }
        return v
    }

    private mutating func expectColon() throws(SafeTensorsError) {
        skipWhitespace()
        guard peek() == UInt8(ascii: ":") else { throw syntax("expected ':' after a key") }
        pos += 1
        skipWhitespace()
    }

    private mutating func skipWhitespace() {
        while pos < bytes.count {
            switch bytes[pos] {
            case 0x20, 0x09, 0x0A, 0x0D: pos += 1
            default: return
            }
        }
    }

    private func peek() -> UInt8? { pos < bytes.count ? bytes[pos] : nil }
    private func isDigit(_ c: UInt8) -> Bool { c >= UInt8(ascii: "0") && c <= UInt8(ascii: "9") }

    private func error(_ rule: SafeTensorsError.Rule) -> SafeTensorsError {
        SafeTensorsError(file: file, tensor: currentTensor, rule: rule)
    }

    private func syntax(_ reason: String) -> SafeTensorsError {
        let reason = pos >= bytes.count ? "unexpected end of header (\(reason))" : reason
        return SafeTensorsError(file: file, tensor: currentTensor, rule: .invalidJSON(offset: pos, reason: reason))
    }

    // MARK: - Layout

    /// Sorted by offsets, the tensors' data must tile the data section exactly: starting at
    /// 0, no holes, no overlaps, ending at the end of the file. Header order is free (the
    /// reference implementation also sorts by offsets before checking).
    private static func validateLayout(_ header: inout ParsedHeader, dataSectionSize: Int,
                                       file: String) throws(SafeTensorsError) {
        let order = header.tensors.indices.sorted {
            let a = header.tensors[$0].dataOffsets, b = header.tensors[$1].dataOffsets
            return (a.lowerBound, a.upperBound, $0) < (b.lowerBound, b.upperBound, $1)
        }
        var expected = 0
        for i in order {
            let info = header.tensors[i]
            let begin = info.dataOffsets.lowerBound
            if begin > expected {
                throw SafeTensorsError(file: file, tensor: info.name, rule: .dataGap(expectedBegin: expected, begin: begin))
            }
            if begin < expected {
                throw SafeTensorsError(file: file, tensor: info.name, rule: .dataOverlap(previousEnd: expected, begin: begin))
            }
            expected = info.dataOffsets.upperBound
        }
        guard expected == dataSectionSize else {
            throw SafeTensorsError(file: file, rule: .dataEndMismatch(dataEnd: expected, dataSectionSize: dataSectionSize))
        }
    }
}

/// True when some byte of `word` is `"` (0x22), `\` (0x5C) or below 0x20 (SWAR: the
/// classic "has zero byte" / "has byte less than n" bit tricks; may not say which byte).
@inline(__always)
private func swarHasQuoteBackslashOrControl(_ word: UInt64) -> Bool {
    let ones: UInt64 = 0x0101_0101_0101_0101, highs: UInt64 = 0x8080_8080_8080_8080
    func hasZeroByte(_ x: UInt64) -> Bool { (x &- ones) & ~x & highs != 0 }
    let below0x20 = (word &- ones &* 0x20) & ~word & highs != 0
    return below0x20 || hasZeroByte(word ^ (ones &* 0x22)) || hasZeroByte(word ^ (ones &* 0x5C))
}

/// Offset of the first byte that does not belong to a well-formed UTF-8 sequence (no
/// overlong forms, no surrogates, nothing above U+10FFFF), or nil when all is valid.
func firstInvalidUTF8Offset(_ b: UnsafeRawBufferPointer) -> Int? {
    var i = 0
    let n = b.count
    while i < n {
        // ASCII runs 8 bytes at a time.
        if i + 8 <= n, b.loadUnaligned(fromByteOffset: i, as: UInt64.self) & 0x8080_8080_8080_8080 == 0 {
            i += 8
            continue
        }
        let c = b[i]
        if c < 0x80 { i += 1; continue }
        let need: Int
        var scalar: UInt32
        let minimum: UInt32
        if c & 0xE0 == 0xC0 { need = 1; scalar = UInt32(c & 0x1F); minimum = 0x80 }
        else if c & 0xF0 == 0xE0 { need = 2; scalar = UInt32(c & 0x0F); minimum = 0x800 }
        else if c & 0xF8 == 0xF0 { need = 3; scalar = UInt32(c & 0x07); minimum = 0x10000 }
        else { return i }
        guard i + need < n else { return i }
        for k in 1...need {
            let cc = b[i + k]
            guard cc & 0xC0 == 0x80 else { return i }
            scalar = scalar << 6 | UInt32(cc & 0x3F)
        }
        if scalar < minimum || scalar > 0x10FFFF || (0xD800...0xDFFF).contains(scalar) { return i }
        i += need + 1
    }
    return nil
}
