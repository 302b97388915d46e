import Foundation
import Testing
import Tensor
@testable import SafeTensors

/// dtypes.json: what Python (torch) says about dtypes.safetensors.
private struct DTypesSidecar: Decodable {
    struct Entry: Decodable {
        let dtype: String
        let shape: [Int]
        let data_offsets: [Int]
        let bytes_hex: String
        let f32_bits: [UInt32]?
        let ints: [String]?
    }
    let file_size: Int
    let header_size: Int
    let header_order: [String]
    let metadata: [String: String]
    let tensors: [String: Entry]

    static func load() throws -> DTypesSidecar {
        try JSONDecoder().decode(DTypesSidecar.self, from: Fixtures.data("dtypes.json"))
    }
}

private func hex(_ bytes: [UInt8]) -> String { bytes.map { String(format: "%02x", $0) }.joined() }

@Suite struct ReaderFixtureTests {
    @Test func headerFacts() throws {
        let expected = try DTypesSidecar.load()
        let file = try SafeTensorsFile(path: Fixtures.path("dtypes.safetensors"))
        #expect(file.fileSize == expected.file_size)
        #expect(file.headerByteCount == expected.header_size)
        #expect(file.dataStart == 8 + expected.header_size)
        #expect(file.metadata == expected.metadata)
        #expect(file.names == expected.header_order)
        #expect(file.sortedNames == expected.header_order.sorted { Array($0.utf8).lexicographicallyPrecedes(Array($1.utf8)) })
        #expect(Set(file.names) == Set(expected.tensors.keys))
        var parameters = 0
        for (name, entry) in expected.tensors {
            let info = try file.info(named: name)
            #expect(info.name == name)
            #expect(info.dtype.rawValue == entry.dtype)
            #expect(info.shape == entry.shape)
            #expect(info.dataOffsets == entry.data_offsets[0]..<entry.data_offsets[1])
            #expect(info.fileRange == (file.dataStart + entry.data_offsets[0])..<(file.dataStart + entry.data_offsets[1]))
            #expect(info.byteCount == entry.bytes_hex.count / 2)
            parameters += entry.shape.reduce(1, *)
        }
        #expect(file.parameterCount == parameters)
        #expect(file.contains("f32") && !file.contains("F32"))
    }

    @Test func rawBytesAreZeroCopyViews() throws {
        let expected = try DTypesSidecar.load()
        let file = try SafeTensorsFile(path: Fixtures.path("dtypes.safetensors"))
        for (name, entry) in expected.tensors {
            let t = try file.tensor(named: name)
            #expect(t.dtype.rawValue == entry.dtype && t.shape == entry.shape, "\(name)")
            #expect(t.storage.isMapped, "\(name) should be a view of the mapping")
            #expect(t.isContiguous || t.count == 0)
            #expect(hex(rawBytes(t)) == entry.bytes_hex, "\(name)")
        }
    }

    /// Every float tensor read as F32 equals torch's `.to(torch.float32)` bit for bit
    /// (NaN: any NaN), including all 256 F8_E4M3 and F8_E5M2 patterns.
    @Test func floatValuesMatchTorch() throws {
        let expected = try DTypesSidecar.load()
        let file = try SafeTensorsFile(path: Fixtures.path("dtypes.safetensors"))
        var checked = 0
        for (name, entry) in expected.tensors {
            guard let bits = entry.f32_bits else { continue }
            let f32 = try file.f32Tensor(named: name)
            #expect(f32.dtype == .f32 && f32.shape == entry.shape)
            let got = f32.floats
            try #require(got.count == bits.count, "\(name)")
            for (i, (g, e)) in zip(got, bits).enumerated() {
                let want = Float(bitPattern: e)
                if want.isNaN {
                    #expect(g.isNaN, "\(name)[\(i)]: expected NaN, got \(g)")
                } else {
                    #expect(g.bitPattern == e, "\(name)[\(i)]: expected \(want), got \(g)")
                }
            }
            checked += bits.count
        }
        #expect(checked >= 512 + 16 + 16 + 12 + 6 + 2)
    }

    @Test func integerValuesMatchTorch() throws {
        let expected = try DTypesSidecar.load()
        let file = try SafeTensorsFile(path: Fixtures.path("dtypes.safetensors"))
        for (name, entry) in expected.tensors {
            guard let ints = entry.ints else { continue }
            let t = try file.tensor(named: name)
            let want = ints.map { Int64($0)! }
            if t.count == 0 { #expect(want.isEmpty); continue }
            // Read the stored integers directly (exact for I64 beyond 2^53).
            let got: [Int64] = t.withUnsafeBytes { raw in
                (0..<t.count).map { i in
                    switch t.dtype {
                    case .i64: return raw.loadUnaligned(fromByteOffset: i * 8, as: Int64.self)
                    case .i32: return Int64(raw.loadUnaligned(fromByteOffset: i * 4, as: Int32.self))
                    case .i16: return Int64(raw.loadUnaligned(fromByteOffset: i * 2, as: Int16.self))
                    case .i8: return Int64(raw.loadUnaligned(fromByteOffset: i, as: Int8.self))
                    case .u8, .bool: return Int64(raw[i])
                    default: return .min
                    }
                }
            }
            #expect(got == want, "\(name)")
            // And through the F32 conversion, for values F32 holds exactly.
            let floats = try file.f32Tensor(named: name).floats
            for (f, w) in zip(floats, want) where w.magnitude < 1 << 24 {
                #expect(f == Float(w), "\(name)")
            }
        }
    }

    @Test func zeroSizeAndScalars() throws {
        let file = try SafeTensorsFile(path: Fixtures.path("dtypes.safetensors"))
        let empty = try file.tensor(named: "empty_f32")
        #expect(empty.shape == [0, 3] && empty.count == 0 && empty.byteCount == 0)
        #expect(try file.f32Tensor(named: "empty_i32").shape == [4, 0])
        #expect(try file.info(named: "empty_bf16").byteCount == 0)
        let scalar = try file.tensor(named: "scalar_f32")
        #expect(scalar.rank == 0 && scalar.floats == [3.5])
        #expect(try file.f32Tensor(named: "scalar_i64").floats == [-7])
        #expect(try file.f32Tensor(named: "scalar_f16").floats == [-0.5])
    }

    @Test func f32TensorOfF32IsTheView() throws {
        let file = try SafeTensorsFile(path: Fixtures.path("dtypes.safetensors"))
        let view = try file.tensor(named: "f32"), f32 = try file.f32Tensor(named: "f32")
        #expect(f32.storage === view.storage || f32.baseAddress == view.baseAddress)
        #expect(f32.storage.isMapped)
    }

    @Test func unknownNameIsATypedError() throws {
        let file = try SafeTensorsFile(path: Fixtures.path("dtypes.safetensors"))
        do {
            _ = try file.tensor(named: "nope")
            Issue.record("expected an error")
        } catch {
            #expect(error.rule == .tensorNotFound && error.tensor == "nope")
            #expect(error.description == "\(file.path): tensor \"nope\": no such tensor")
        }
    }

    /// Views keep the mapping alive after the file object is gone.
    @Test func viewsOutliveTheFile() throws {
        var file: SafeTensorsFile? = try SafeTensorsFile(path: Fixtures.path("dtypes.safetensors"))
        let t = try file!.tensor(named: "u8")
        file = nil
        #expect(rawBytes(t) == (0..<256).map { UInt8($0) })
    }

    /// A tensor whose file offset is not a multiple of its element size is copied into an
    /// aligned buffer (never a misaligned typed view), with the same values.
    @Test func misalignedDataIsCopied() throws {
        let dir = try TemporaryDirectory()
        // Header of 13 bytes → data starts at 21; a U8 first puts the F32 at 22 (not 4-aligned).
        var header = #"{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"b":{"dtype":"F32","shape":[2],"data_offsets":[1,9]}}"#
        while (8 + header.utf8.count) % 4 != 1 { header += " " }
        var data: [UInt8] = [7]
        for v: Float in [1.25, -3] { withUnsafeBytes(of: v.bitPattern.littleEndian) { data.append(contentsOf: $0) } }
        let path = try dir.write(rawFile(header: header, data: data))
        let file = try SafeTensorsFile(path: path)
        let info = try file.info(named: "b")
        #expect(!info.isAligned)
        let b = try file.tensor(named: "b")
        #expect(!b.storage.isMapped)
        #expect(b.floats == [1.25, -3])
        #expect(try file.tensor(named: "a").storage.isMapped)
    }

    /// Opening reads only the header: a 4 GiB sparse file opens as fast as a tiny one.
    @Test func openIsHeaderOnly() throws {
        let dir = try TemporaryDirectory()
        let dataSize = 4 << 30
        let header = #"{"big":{"dtype":"U8","shape":[\#(dataSize)],"data_offsets":[0,\#(dataSize)]}}"#
        let path = try dir.write(rawFile(header: header))
        // Extend with a hole: no disk blocks, and reading it would take seconds.
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
        try handle.truncate(atOffset: UInt64(8 + header.utf8.count + dataSize))
        try handle.close()
        let start = Date()
        var file: SafeTensorsFile? = nil
        for _ in 0..<10 { file = try SafeTensorsFile(path: path) }
        let perOpen = Date().timeIntervalSince(start) / 10
        #expect(try file?.info(named: "big").byteCount == dataSize)
        #expect(perOpen < 0.010, "open took \(perOpen * 1000) ms")
    }
}
