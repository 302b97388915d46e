/// Why a safetensors file could not be read or written.
///
/// Every failure of ``SafeTensorsFile`` and ``SafeTensorsWriter`` is one of these: it names the
/// file, the tensor when one is involved, and the rule that was broken. `description` is a
/// single line, `<file>: [tensor "<name>": ]<rule>`, with control characters in names escaped
/// so that a hostile name cannot forge extra lines of output.
public struct SafeTensorsError: Error, CustomStringConvertible, Equatable, Sendable {
    /// The file being read or written.
    public let file: String
    /// The tensor (header key) the rule concerns, when there is one.
    public let tensor: String?
    /// The rule that was broken.
    public let rule: Rule

    public init(file: String, tensor: String? = nil, rule: Rule) {
        self.file = file
        self.tensor = tensor
        self.rule = rule
    }

    /// `<file>: [tensor "<name>": ]<rule>`, one line.
    public var description: String {
        let where_ = tensor.map { "tensor \(quotedForMessage($0)): " } ?? ""
        return "\(escapedForMessage(file)): \(where_)\(rule)"
    }

    /// The rules of the format (reading) and of safe writing.
    public enum Rule: Equatable, Sendable, CustomStringConvertible {
        // MARK: Opening and the length prefix
        /// The file could not be opened or mapped (the system's reason).
        case cannotOpen(reason: String)
        /// Fewer than 8 bytes: no room for the header length.
        case fileTooSmall(size: Int)
        /// The header length exceeds ``SafeTensorsFormat/maxHeaderLength``.
        case headerTooLarge(length: UInt64)
        /// The header length runs past the end of the file.
        case headerBeyondFile(length: UInt64, fileSize: Int)

        // MARK: Header syntax
        /// The header bytes are not valid UTF-8 (offset within the header).
        case headerNotUTF8(offset: Int)
        /// The header is not valid JSON (offset within the header).
        case invalidJSON(offset: Int, reason: String)
        /// The header's top-level JSON value is not an object.
        case headerNotObject
        /// A key appears twice in the header's top-level object.
        case duplicateKey(String)

        // MARK: Metadata
        /// `__metadata__` is not a JSON object.
        case metadataNotObject
        /// A `__metadata__` value is not a string.
        case metadataValueNotString(key: String)
        /// A key appears twice in `__metadata__`.
        case duplicateMetadataKey(String)

        // MARK: Tensor entries
        /// A tensor's entry is not a JSON object.
        case entryNotObject
        /// A tensor's entry lacks `dtype`, `shape` or `data_offsets`.
        case missingField(String)
        /// A tensor's entry has a field other than `dtype`, `shape`, `data_offsets`.
        case unexpectedField(String)
        /// A tensor's entry has a field twice.
        case duplicateField(String)
        /// `dtype` is not a JSON string.
        case dtypeNotString
        /// `dtype` is a string that names no dtype the format knows.
        case unknownDType(String)
        /// `dtype` is valid in the reference implementation but `Tensor` cannot hold it.
        case unsupportedDType(String)
        /// `shape` is not an array of non-negative integers.
        case invalidShape(reason: String)
        /// `data_offsets` is not an array of two non-negative integers.
        case invalidDataOffsets(reason: String)
        /// `data_offsets` has end < begin.
        case offsetsReversed(begin: Int, end: Int)
        /// Element count × element size overflows.
        case byteSizeOverflow(shape: [Int], dtype: String)
        /// `data_offsets` do not span exactly element count × element size bytes.
        case byteSizeMismatch(dtype: String, shape: [Int], expected: Int, begin: Int, end: Int)

        // MARK: Data section layout
        /// A hole in the data section before this tensor (sorted by offsets).
        case dataGap(expectedBegin: Int, begin: Int)
        /// This tensor's data overlaps the previous one's (sorted by offsets).
        case dataOverlap(previousEnd: Int, begin: Int)
        /// The tensors' data does not end exactly at the end of the file.
        case dataEndMismatch(dataEnd: Int, dataSectionSize: Int)

        // MARK: Lookup
        /// No tensor of that name in the file.
        case tensorNotFound

        // MARK: Writing
        /// The destination is a file this process has open for reading (same device and inode).
        case outputOpenForReading
        /// The destination is the same file (device and inode) as a declared input.
        case outputIsInput(input: String)
        /// Two tensors with the same name were added.
        case duplicateTensorName
        /// The tensor name is reserved (`__metadata__`).
        case reservedTensorName
        /// A shape has a negative dimension, or its byte size overflows.
        case invalidTensorShape(shape: [Int])
        /// A streamed source produced a different number of bytes than dtype × shape requires.
        case sourceSizeMismatch(expected: Int, produced: Int)
        /// A tensor handed to the writer has a different dtype/shape than declared.
        case tensorMismatch(reason: String)
        /// A system call failed while writing.
        case ioFailure(operation: String, reason: String)

        public var description: String {
            switch self {
            case .cannotOpen(let reason):
                return "cannot open: \(escapedForMessage(reason))"
            case .fileTooSmall(let size):
                return "file is \(size) bytes, too small for the 8-byte header length"
            case .headerTooLarge(let length):
                return "header length \(length) exceeds the limit of \(SafeTensorsFormat.maxHeaderLength) bytes"
            case .headerBeyondFile(let length, let fileSize):
                return "header length \(length) runs past the end of the file (\(fileSize) bytes)"
            case .headerNotUTF8(let offset):
                return "header is not valid UTF-8 (at header byte \(offset))"
            case .invalidJSON(let offset, let reason):
                return "header is not valid JSON at header byte \(offset): \(reason)"
            case .headerNotObject:
                return "header is not a JSON object"
            case .duplicateKey(let key):
                return "duplicate key \(quotedForMessage(key)) in the header"
            case .metadataNotObject:
                return "__metadata__ is not a JSON object"
            case .metadataValueNotString(let key):
                return "__metadata__ value for key \(quotedForMessage(key)) is not a string"
            case .duplicateMetadataKey(let key):
                return "duplicate key \(quotedForMessage(key)) in __metadata__"
            case .entryNotObject:
                return "entry is not a JSON object"
            case .missingField(let field):
                return "entry lacks the field \"\(field)\""
            case .unexpectedField(let field):
                return "entry has an unexpected field \(quotedForMessage(field)) (allowed: dtype, shape, data_offsets)"
            case .duplicateField(let field):
                return "entry has the field \(quotedForMessage(field)) twice"
            case .dtypeNotString:
                return "dtype is not a string"
            case .unknownDType(let name):
                return "unknown dtype \(quotedForMessage(name))"
            case .unsupportedDType(let name):
                return "dtype \(quotedForMessage(name)) is not supported (supported: "
                    + "F64 F32 F16 BF16 F8_E4M3 F8_E5M2 I64 I32 I16 I8 U8 BOOL)"
            case .invalidShape(let reason):
                return "invalid shape: \(reason)"
            case .invalidDataOffsets(let reason):
                return "invalid data_offsets: \(reason)"
            case .offsetsReversed(let begin, let end):
                return "data_offsets [\(begin), \(end)] end before they begin"
            case .byteSizeOverflow(let shape, let dtype):
                return "shape \(shape) of \(dtype) overflows the byte size"
            case .byteSizeMismatch(let dtype, let shape, let expected, let begin, let end):
                return "dtype \(dtype) and shape \(shape) need \(expected) bytes but data_offsets "
                    + "[\(begin), \(end)] span \(end - begin)"
            case .dataGap(let expectedBegin, let begin):
                return "data starts at offset \(begin), leaving a hole after offset \(expectedBegin)"
            case .dataOverlap(let previousEnd, let begin):
                return "data starts at offset \(begin), overlapping the previous tensor that ends at \(previousEnd)"
            case .dataEndMismatch(let dataEnd, let size):
                return dataEnd < size
                    ? "tensor data ends at offset \(dataEnd) but the data section has \(size) bytes (trailing bytes)"
                    : "tensor data ends at offset \(dataEnd) but the data section has only \(size) bytes (truncated file)"
            case .tensorNotFound:
                return "no such tensor"
            case .outputOpenForReading:
                return "refusing to overwrite a file that is open for reading in this process"
            case .outputIsInput(let input):
                return "refusing to overwrite the input \(escapedForMessage(input)) (same file)"
            case .duplicateTensorName:
                return "tensor added twice"
            case .reservedTensorName:
                return "the name __metadata__ is reserved"
            case .invalidTensorShape(let shape):
                return "invalid shape \(shape) (negative dimension or byte size overflow)"
            case .sourceSizeMismatch(let expected, let produced):
                return "source produced \(produced) bytes, expected \(expected)"
            case .tensorMismatch(let reason):
                return "tensor does not match its declaration: \(reason)"
            case .ioFailure(let operation, let reason):
                return "\(operation) failed: \(escapedForMessage(reason))"
            }
        }
    }
}

/// `s` in double quotes with quotes, backslashes and control characters escaped (JSON style).
func quotedForMessage(_ s: String) -> String { "\"" + escapedForMessage(s, escapeQuotes: true) + "\"" }

/// `s` with control characters (and optionally quotes and backslashes) escaped, so a message
/// stays on one line whatever the names in a file contain.
func escapedForMessage(_ s: String, escapeQuotes: Bool = false) -> String {
    var out = ""
    out.reserveCapacity(s.utf8.count)
    for scalar in s.unicodeScalars {
        switch scalar {
        case "\"" where escapeQuotes: out += "\\\""
        case "\\" where escapeQuotes: out += "\\\\"
        case "\n": out += "\\n"
        case "\r": out += "\\r"
        case "\t": out += "\\t"
        case _ where scalar.value < 0x20 || (0x7F...0x9F).contains(scalar.value)
                     || scalar.value == 0x2028 || scalar.value == 0x2029:
            out += "\\u" + String(format4Hex: scalar.value)
        default: out.unicodeScalars.append(scalar)
        }
    }
    return out
}

extension String {
    /// Four lowercase hex digits (for `\uXXXX` escapes).
    init(format4Hex value: UInt32) {
        let digits = Array("0123456789abcdef")
        self = String([digits[Int(value >> 12 & 0xF)], digits[Int(value >> 8 & 0xF)],
                       digits[Int(value >> 4 & 0xF)], digits[Int(value & 0xF)]])
    }
}
