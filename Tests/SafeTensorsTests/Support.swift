import Foundation
import Testing
import Tensor
@testable import SafeTensors

/// Fixtures written by tools/gen_safetensors_fixtures.py (Python safetensors + torch/numpy).
enum Fixtures {
    static var directory: URL {
        Bundle.module.url(forResource: "Fixtures", withExtension: nil)!
    }
    static func path(_ name: String) -> String { directory.appendingPathComponent(name).path }
    static func data(_ name: String) throws -> Data { try Data(contentsOf: directory.appendingPathComponent(name)) }
}

/// A fresh directory, removed when the value goes away.
final class TemporaryDirectory {
    let path: String
    init() throws {
        path = NSTemporaryDirectory() + "ah-st-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }
    deinit { try? FileManager.default.removeItem(atPath: path) }
    func file(_ name: String) -> String { (path as NSString).appendingPathComponent(name) }
    /// Writes `bytes` to a file in this directory and returns its path.
    func write(_ bytes: [UInt8], name: String = "t.safetensors") throws -> String {
        let p = file(name)
        try Data(bytes).write(to: URL(fileURLWithPath: p))
        return p
    }
    /// Names of the entries in the directory (to check that no temporary file is left).
    func entries() throws -> [String] { try FileManager.default.contentsOfDirectory(atPath: path).sorted() }
}

/// A raw safetensors file: `length` (default: the header's byte count) as u64 LE, the header
/// bytes as given (no padding added), then `data`.
func rawFile(header: [UInt8], data: [UInt8] = [], length: UInt64? = nil) -> [UInt8] {
    var out: [UInt8] = []
    var n = (length ?? UInt64(header.count)).littleEndian
    withUnsafeBytes(of: &n) { out.append(contentsOf: $0) }
    return out + header + data
}

func rawFile(header: String, data: [UInt8] = [], length: UInt64? = nil) -> [UInt8] {
    rawFile(header: Array(header.utf8), data: data, length: length)
}

/// Runs the reader's full validation on in-memory file contents.
func validate(_ bytes: [UInt8], file: String = "mem.safetensors") throws(SafeTensorsError) -> ParsedHeader {
    var result: Result<ParsedHeader, SafeTensorsError>?
    bytes.withUnsafeBytes { buffer in
        do throws(SafeTensorsError) {
            result = .success(try SafeTensorsFile.validate(buffer, file: file).header)
        } catch {
            result = .failure(error)
        }
    }
    return try result!.get()
}

/// The value formula shared with tools/safetensors_formula.py, implemented independently:
/// spec entry k, element i (row-major):
///   floats: ((i*7 + k*3) % 9 - 4) * 0.5;  I8...I64: (i*7 + k*3) % 23 - 11;
///   U8: (i*7 + k*3) % 256;  BOOL: (i*7 + k*3) % 3 == 0.
enum Formula {
    static func value(_ dtype: DType, k: Int, i: Int) -> Double {
        let base = i * 7 + k * 3
        switch dtype {
        case .f64, .f32, .f16, .bf16, .f8e4m3, .f8e5m2: return Double(base % 9 - 4) * 0.5
        case .u8: return Double(base % 256)
        case .bool: return base % 3 == 0 ? 1 : 0
        case .i64, .i32, .i16, .i8: return Double(base % 23 - 11)
        }
    }

    /// Encodings of 0, 0.5, 1, 1.5, 2 (index = |value| * 2), written out by hand from each
    /// format's definition so the expected bytes do not come from the code under test.
    private static let f16Table: [UInt16] = [0x0000, 0x3800, 0x3C00, 0x3E00, 0x4000]   // bias 15, 10-bit mantissa
    private static let e4m3Table: [UInt8] = [0x00, 0x30, 0x38, 0x3C, 0x40]            // bias 7, 3-bit mantissa
    private static let e5m2Table: [UInt8] = [0x00, 0x38, 0x3C, 0x3E, 0x40]            // bias 15, 2-bit mantissa

    /// Little-endian bytes of the whole tensor.
    static func bytes(_ dtype: DType, k: Int, shape: [Int]) -> [UInt8] {
        let count = shape.reduce(1, *)
        var out: [UInt8] = []
        out.reserveCapacity(count * dtype.byteSize)
        func append<T: FixedWidthInteger>(_ v: T) { withUnsafeBytes(of: v.littleEndian) { out.append(contentsOf: $0) } }
        for i in 0..<count {
            let v = value(dtype, k: k, i: i)
            let halfUnits = Int(abs(v) * 2)
            switch dtype {
            case .f64: append(v.bitPattern)
            case .f32: append(Float(v).bitPattern)
            case .f16: append(f16Table[halfUnits] | (v < 0 ? 0x8000 : 0))
            case .bf16: append(UInt16(Float(v).bitPattern >> 16))  // exact: these values need 2 mantissa bits
            case .f8e4m3: out.append(e4m3Table[halfUnits] | (v < 0 ? 0x80 : 0))
            case .f8e5m2: out.append(e5m2Table[halfUnits] | (v < 0 ? 0x80 : 0))
            case .i64: append(Int64(v))
            case .i32: append(Int32(v))
            case .i16: append(Int16(v))
            case .i8: append(Int8(v))
            case .u8: out.append(UInt8(v))
            case .bool: out.append(UInt8(v))
            }
        }
        return out
    }

    /// A contiguous owned tensor with the formula's values.
    static func tensor(_ dtype: DType, k: Int, shape: [Int]) -> Tensor {
        let bytes = bytes(dtype, k: k, shape: shape)
        let t = Tensor(uninitialized: shape, dtype: dtype)
        if bytes.isEmpty { return t }  // zero-size: nothing to copy
        t.withUnsafeMutableBytes { dst in bytes.withUnsafeBytes { dst.copyMemory(from: $0) } }
        return t
    }
}

/// One spec list from writer_specs.json (see tools/gen_safetensors_fixtures.py).
struct WriterSpec: Decodable {
    struct Entry: Decodable {
        let name: String
        let dtype: String
        let shape: [Int]
    }
    let metadata: [String: String]
    let tensors: [Entry]

    static func load(_ fixture: String) throws -> WriterSpec {
        let all = try JSONDecoder().decode([String: WriterSpec].self, from: Fixtures.data("writer_specs.json"))
        return try #require(all[fixture])
    }
}

/// Raw bytes of a contiguous tensor (zero-size: none, without asking the tensor for a buffer).
func rawBytes(_ t: Tensor) -> [UInt8] { t.count == 0 ? [] : t.withUnsafeBytes { Array($0) } }

/// Bytes of a file.
func fileBytes(_ path: String) throws -> [UInt8] { Array(try Data(contentsOf: URL(fileURLWithPath: path))) }
