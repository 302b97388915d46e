import Foundation
import Tensor
import Testing
@testable import TorchPickle

/// Fixtures written by tools/gen_pickle_fixtures.py (real torch.save, plus crafted files).
enum Fixtures {
    static var directory: URL { Bundle.module.url(forResource: "Fixtures", withExtension: nil)! }
    static func path(_ name: String) -> String { directory.appendingPathComponent(name).path }
    static func bytes(_ name: String) throws -> [UInt8] { Array(try Data(contentsOf: directory.appendingPathComponent(name))) }

    static let expected: Expected = {
        let data = try! Data(contentsOf: directory.appendingPathComponent("expected.json"))
        return try! JSONDecoder().decode(Expected.self, from: data)
    }()
}

/// expected.json: what torch.load returned, flattened by the generator's own rules.
struct Expected: Decodable {
    struct File: Decodable {
        let format: String
        let root: String?
        let tensors: [TensorExpectation]
        let values: [String: Tagged]
    }
    struct TensorExpectation: Decodable {
        let key: String
        let dtype: String
        let shape: [Int]
        let strides: [Int]
        let offset: Int
        let storageGroup: Int
        let values: [Double]?
        let crc32: UInt32?
        let sum: Double?
    }
    struct Refusal: Decodable {
        let rule: String
        let module: String?
        let name: String?
        let marker: String?
        let entry: String?
        let method: Int?
        let callee: String?
    }
    let files: [String: File]
    let refusals: [String: Refusal]
}

/// A plain value in the generator's tagged JSON form ({"int": 5}, {"list": [...]}, …).
indirect enum Tagged: Decodable, Equatable, CustomStringConvertible {
    case none, bool(Bool), int(Int), bigint(String), float(Double), str(String), bytes(String)
    case list([Tagged]), tuple([Tagged]), set([Tagged]), dict([[Tagged]]), global(String)

    private struct Key: CodingKey {
        var stringValue: String
        var intValue: Int? { nil }
        init(stringValue: String) { self.stringValue = stringValue }
        init?(intValue: Int) { nil }
    }

    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: Key.self)
        guard let key = c.allKeys.first, c.allKeys.count == 1 else {
            throw DecodingError.dataCorrupted(.init(codingPath: c.codingPath, debugDescription: "not a tagged value"))
        }
        switch key.stringValue {
        case "none": self = .none
        case "bool": self = .bool(try c.decode(Bool.self, forKey: key))
        case "int": self = .int(try c.decode(Int.self, forKey: key))
        case "bigint": self = .bigint(try c.decode(String.self, forKey: key))
        case "float": self = .float(try c.decode(Double.self, forKey: key))
        case "str": self = .str(try c.decode(String.self, forKey: key))
        case "bytes": self = .bytes(try c.decode(String.self, forKey: key))
        case "list": self = .list(try c.decode([Tagged].self, forKey: key))
        case "tuple": self = .tuple(try c.decode([Tagged].self, forKey: key))
        case "set": self = .set(try c.decode([Tagged].self, forKey: key).sorted { $0.description < $1.description })
        case "dict": self = .dict(try c.decode([[Tagged]].self, forKey: key))
        case "global": self = .global(try c.decode(String.self, forKey: key))
        default: throw DecodingError.dataCorrupted(.init(codingPath: c.codingPath, debugDescription: key.stringValue))
        }
    }

    /// The same form for a value the reader produced (nil for tensors, which expected.json keeps apart).
    init?(_ v: PickleValue) {
        switch v {
        case .none: self = .none
        case .bool(let b): self = .bool(b)
        case .int(let i): self = .int(i)
        case .bigInt(let bytes): self = .bigint(decimalString(twosComplement: bytes))
        case .float(let d): self = .float(d)
        case .string(let s): self = .str(s)
        case .bytes(let b): self = .bytes(b.map { String(format: "%02x", $0) }.joined())
        case .list(let a): guard let t = Tagged.all(a) else { return nil }; self = .list(t)
        case .tuple(let a): guard let t = Tagged.all(a) else { return nil }; self = .tuple(t)
        case .set(let a): guard let t = Tagged.all(a) else { return nil }; self = .set(t.sorted { $0.description < $1.description })
        case .dict(let d):
            var pairs: [[Tagged]] = []
            for e in d.entries {
                guard let k = Tagged(e.key), let v = Tagged(e.value) else { return nil }
                pairs.append([k, v])
            }
            self = .dict(pairs)
        case .tensor: return nil
        case .global(let m, let n): self = .global(m + "." + n)
        }
    }

    private static func all(_ a: [PickleValue]) -> [Tagged]? {
        var out: [Tagged] = []
        for v in a { guard let t = Tagged(v) else { return nil }; out.append(t) }
        return out
    }

    var description: String {
        switch self {
        case .none: return "None"
        case .bool(let b): return "bool:\(b)"
        case .int(let i): return "int:\(i)"
        case .bigint(let s): return "bigint:\(s)"
        case .float(let d): return "float:\(d)"
        case .str(let s): return "str:\(s)"
        case .bytes(let s): return "bytes:\(s)"
        case .list(let a): return "[\(a.map(\.description).joined(separator: ","))]"
        case .tuple(let a): return "(\(a.map(\.description).joined(separator: ",")))"
        case .set(let a): return "{\(a.map(\.description).joined(separator: ","))}"
        case .dict(let a): return "{\(a.map { $0.map(\.description).joined(separator: ":") }.joined(separator: ","))}"
        case .global(let s): return "global:\(s)"
        }
    }
}

/// Decimal text of a little-endian two's-complement integer (independent of the reader's code).
func decimalString(twosComplement bytes: [UInt8]) -> String {
    let negative = (bytes.last ?? 0) & 0x80 != 0
    var magnitude = bytes
    if negative {  // negate: invert, add one
        var carry = 1
        for i in magnitude.indices {
            let v = Int(~magnitude[i]) + carry
            magnitude[i] = UInt8(v & 0xFF)
            carry = v >> 8
        }
    }
    var digits: [UInt8] = []
    var number = Array(magnitude.reversed())  // big-endian
    while number.contains(where: { $0 != 0 }) {
        var remainder = 0
        for i in number.indices {
            let v = remainder * 256 + Int(number[i])
            number[i] = UInt8(v / 10)
            remainder = v % 10
        }
        digits.append(UInt8(remainder))
    }
    let text = digits.isEmpty ? "0" : String(digits.reversed().map { Character(String($0)) })
    return negative ? "-" + text : text
}

/// CRC-32 (IEEE, as zlib.crc32), bitwise.
func crc32(_ bytes: UnsafeRawBufferPointer) -> UInt32 {
    var crc: UInt32 = 0xFFFF_FFFF
    for b in bytes {
        crc ^= UInt32(b)
        for _ in 0..<8 { crc = crc & 1 != 0 ? (crc >> 1) ^ 0xEDB8_8320 : crc >> 1 }
    }
    return ~crc
}

/// Runs `body`, returning the TorchPickleError it throws (nil when it does not throw; any other
/// error is a test failure).
func caught<T>(_ body: () throws -> T) -> TorchPickleError? {
    do {
        _ = try body()
        return nil
    } catch let error as TorchPickleError {
        return error
    } catch {
        Issue.record("unexpected error \(error)")
        return nil
    }
}

// MARK: Building pickles and archives by hand

/// Pickle opcodes as bytes, for crafted streams.
enum P {
    static func proto(_ p: UInt8 = 2) -> [UInt8] { [0x80, p] }
    static let stop: [UInt8] = [0x2E]
    static let mark: [UInt8] = [0x28]
    static let none: [UInt8] = [0x4E]
    static let tuple: [UInt8] = [0x74]
    static let tuple1: [UInt8] = [0x85]
    static let tuple2: [UInt8] = [0x86]
    static let emptyTuple: [UInt8] = [0x29]
    static let emptyList: [UInt8] = [0x5D]
    static let emptyDict: [UInt8] = [0x7D]
    static let append: [UInt8] = [0x61]
    static let setItem: [UInt8] = [0x73]
    static let setItems: [UInt8] = [0x75]
    static let reduce: [UInt8] = [0x52]
    static let build: [UInt8] = [0x62]
    static let newObj: [UInt8] = [0x81]
    static let binPersID: [UInt8] = [0x51]
    static let newFalse: [UInt8] = [0x89]
    static let newTrue: [UInt8] = [0x88]
    static let memoize: [UInt8] = [0x94]
    static func global(_ module: String, _ name: String) -> [UInt8] { [0x63] + Array("\(module)\n\(name)\n".utf8) }
    static func string(_ s: String) -> [UInt8] {
        let b = Array(s.utf8)
        return [0x58] + le(UInt32(b.count)) + b
    }
    static func int(_ i: Int32) -> [UInt8] { [0x4A] + le(i) }
    static func put(_ i: UInt8) -> [UInt8] { [0x71, i] }
    static func get(_ i: UInt8) -> [UInt8] { [0x68, i] }
    static func le<T: FixedWidthInteger>(_ v: T) -> [UInt8] { withUnsafeBytes(of: v.littleEndian) { Array($0) } }

    static func intTuple(_ values: [Int]) -> [UInt8] { mark + values.flatMap { int(Int32($0)) } + tuple }

    /// `_rebuild_tensor_v2(('storage', torch.<storageType>, key, 'cpu', numel), offset, size, stride, False, OrderedDict())`.
    static func tensorV2(storageType: String = "FloatStorage", key: String = "0", numel: Int, offset: Int,
                         size: [Int], stride: [Int]) -> [UInt8] {
        global("torch._utils", "_rebuild_tensor_v2") + mark
            + mark + string("storage") + global("torch", storageType) + string(key) + string("cpu")
            + int(Int32(numel)) + tuple + binPersID
            + int(Int32(offset)) + intTuple(size) + intTuple(stride) + newFalse
            + global("collections", "OrderedDict") + emptyTuple + reduce
            + tuple + reduce
    }

    /// `{name: value}` as a protocol-2 pickle.
    static func dict(_ name: String, _ value: [UInt8]) -> [UInt8] {
        proto() + emptyDict + string(name) + value + setItem + stop
    }
}

/// A stored zip archive (local headers, central directory, end record), entries aligned to
/// `alignment` bytes with an extra field, as torch writes them.
func makeZip(_ entries: [(String, [UInt8])], alignment: Int = 64) -> [UInt8] {
    var out: [UInt8] = [], central: [UInt8] = []
    for (name, data) in entries {
        let nameBytes = Array(name.utf8)
        let offset = out.count
        var extra: [UInt8] = []
        var pad = (alignment - (offset + 30 + nameBytes.count) % alignment) % alignment
        if pad > 0 {
            if pad < 4 { pad += alignment }
            extra = P.le(UInt16(0x4246)) + P.le(UInt16(pad - 4)) + [UInt8](repeating: 0x5A, count: pad - 4)
        }
        out += P.le(UInt32(0x0403_4B50)) + P.le(UInt16(20)) + P.le(UInt16(0)) + P.le(UInt16(0))
            + P.le(UInt32(0)) + P.le(UInt32(0)) + P.le(UInt32(data.count)) + P.le(UInt32(data.count))
            + P.le(UInt16(nameBytes.count)) + P.le(UInt16(extra.count)) + nameBytes + extra + data
        central += P.le(UInt32(0x0201_4B50)) + P.le(UInt16(20)) + P.le(UInt16(20)) + P.le(UInt16(0)) + P.le(UInt16(0))
            + P.le(UInt32(0)) + P.le(UInt32(0)) + P.le(UInt32(data.count)) + P.le(UInt32(data.count))
            + P.le(UInt16(nameBytes.count)) + P.le(UInt16(0)) + P.le(UInt16(0)) + P.le(UInt16(0))
            + P.le(UInt16(0)) + P.le(UInt32(0)) + P.le(UInt32(offset)) + nameBytes
    }
    let directoryOffset = out.count
    out += central
    out += P.le(UInt32(0x0605_4B50)) + P.le(UInt16(0)) + P.le(UInt16(0)) + P.le(UInt16(entries.count))
        + P.le(UInt16(entries.count)) + P.le(UInt32(central.count)) + P.le(UInt32(directoryOffset)) + P.le(UInt16(0))
    return out
}

/// A torch-style archive: `archive/data.pkl` plus `archive/data/<key>` records.
func torchZip(pickle: [UInt8], storages: [(String, [UInt8])] = [], root: String = "archive") -> [UInt8] {
    makeZip([("\(root)/data.pkl", pickle), ("\(root)/byteorder", Array("little".utf8))]
            + storages.map { ("\(root)/data/\($0.0)", $0.1) })
}

/// `n` little-endian F32 values 0, 1, 2, …
func floatBytes(_ n: Int) -> [UInt8] { (0..<n).flatMap { P.le(Float($0).bitPattern) } }
