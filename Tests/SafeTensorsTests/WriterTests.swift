import Foundation
import Testing
import Tensor
@testable import SafeTensors

@Suite struct WriterByteIdentityTests {
    /// Builds the spec's tensors from the formula (in the spec's unsorted order), writes
    /// them, and compares with the file Python's safetensors wrote for the same input.
    @Test(arguments: ["order_torch.safetensors", "order_numpy.safetensors"])
    func sameBytesAsPython(_ fixture: String) throws {
        let spec = try WriterSpec.load(fixture)
        var writer = SafeTensorsWriter(metadata: spec.metadata)
        for (k, entry) in spec.tensors.enumerated() {
            let dtype = try #require(DType(rawValue: entry.dtype))
            writer.add(entry.name, tensor: Formula.tensor(dtype, k: k, shape: entry.shape))
        }
        let dir = try TemporaryDirectory()
        let out = dir.file("ours.safetensors")
        try writer.write(to: out)
        let ours = try fileBytes(out), theirs = Array(try Fixtures.data(fixture))
        #expect(ours.count == theirs.count)
        if ours != theirs {
            let first = zip(ours, theirs).enumerated().first { $0.element.0 != $0.element.1 }?.offset ?? min(ours.count, theirs.count)
            Issue.record("first difference at byte \(first): ours \(String(decoding: ours.prefix(first + 40).suffix(80), as: UTF8.self))")
        }
        #expect(try dir.entries() == ["ours.safetensors"])
    }

    /// Reading Python's file and writing its tensors back (added in reverse order, straight
    /// from the mapping) reproduces it byte for byte.
    @Test func roundTripThroughOurReader() throws {
        let source = try SafeTensorsFile(path: Fixtures.path("order_torch.safetensors"))
        var writer = SafeTensorsWriter(metadata: source.metadata)
        for name in source.names.reversed() { writer.add(name, tensor: try source.tensor(named: name)) }
        let dir = try TemporaryDirectory()
        try writer.write(to: dir.file("copy.safetensors"))
        #expect(try fileBytes(dir.file("copy.safetensors")) == Array(try Fixtures.data("order_torch.safetensors")))
    }

    /// The tensors Python wrote hold the formula's values (checks the fixture and the formula).
    @Test func pythonFileHoldsFormulaValues() throws {
        let spec = try WriterSpec.load("order_torch.safetensors")
        let file = try SafeTensorsFile(path: Fixtures.path("order_torch.safetensors"))
        #expect(file.metadata == spec.metadata)
        for (k, entry) in spec.tensors.enumerated() {
            let t = try file.tensor(named: entry.name)
            #expect(t.dtype.rawValue == entry.dtype && t.shape == entry.shape)
            #expect(rawBytes(t) == Formula.bytes(t.dtype, k: k, shape: entry.shape), "\(entry.name)")
            let expected = (0..<t.count).map { Float(Formula.value(t.dtype, k: k, i: $0)) }
            #expect(t.to(.f32).floats == expected, "\(entry.name)")
        }
    }
}

@Suite struct WriterTests {
    private func formulaWriter(metadata: [String: String] = [:]) -> SafeTensorsWriter {
        var w = SafeTensorsWriter(metadata: metadata)
        w.add("w", tensor: Formula.tensor(.f32, k: 0, shape: [3, 5]))
        w.add("b", tensor: Formula.tensor(.f16, k: 1, shape: [5]))
        w.add("i", tensor: Formula.tensor(.i64, k: 2, shape: [2, 2]))
        return w
    }

    @Test func headerIsPaddedWithSpacesToEightBytes() throws {
        let dir = try TemporaryDirectory()
        for length in 1...16 {
            var w = SafeTensorsWriter()
            w.add(String(repeating: "n", count: length), tensor: Tensor(shape: [1], values: [2]))
            let path = dir.file("p\(length).safetensors")
            try w.write(to: path)
            let bytes = try fileBytes(path)
            let n = bytes.withUnsafeBytes { Int(UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self))) }
            #expect(n % 8 == 0)
            let header = String(decoding: bytes[8..<(8 + n)], as: UTF8.self)
            let json = #"{"\#(String(repeating: "n", count: length))":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#
            #expect(header == json + String(repeating: " ", count: n - json.utf8.count))
            #expect(bytes.count == 8 + n + 4)
        }
    }

    @Test func metadataIsSortedAndEmptyMetadataOmitted() throws {
        let dir = try TemporaryDirectory()
        var w = SafeTensorsWriter(metadata: ["z": "1", "a": "x\"y", "\u{E9}": "", "B": "\n"])
        w.add("t", tensor: Tensor(scalar: 1))
        try w.write(to: dir.file("m.safetensors"))
        let bytes = try fileBytes(dir.file("m.safetensors"))
        let header = String(decoding: bytes[8...], as: UTF8.self)
        #expect(header.hasPrefix(#"{"__metadata__":{"B":"\n","a":"x\"y","z":"1","\#u{E9}":""},"t":"#))
        let file = try SafeTensorsFile(path: dir.file("m.safetensors"))
        #expect(file.metadata == ["z": "1", "a": "x\"y", "\u{E9}": "", "B": "\n"])

        try SafeTensorsWriter.write(["t": Tensor(scalar: 1)], to: dir.file("n.safetensors"))
        #expect(String(decoding: try fileBytes(dir.file("n.safetensors"))[8...], as: UTF8.self)
                .hasPrefix(#"{"t":{"dtype":"F32","shape":[],"data_offsets":[0,4]}}"#))
    }

    /// Streamed sources in odd chunk sizes give the same file as whole tensors.
    @Test func streamingSourceMatchesTensorSource() throws {
        let dir = try TemporaryDirectory()
        try formulaWriter().write(to: dir.file("whole.safetensors"))
        var w = SafeTensorsWriter()
        for (name, dtype, k, shape) in [("w", DType.f32, 0, [3, 5]), ("b", .f16, 1, [5]), ("i", .i64, 2, [2, 2])] {
            let bytes = Formula.bytes(dtype, k: k, shape: shape)
            w.add(name, dtype: dtype, shape: shape) { sink in
                var start = 0, step = 1
                while start < bytes.count {
                    let end = min(bytes.count, start + step)
                    try bytes[start..<end].withUnsafeBytes { try sink($0) }
                    start = end
                    step = step % 7 + 1
                }
            }
        }
        try w.write(to: dir.file("streamed.safetensors"))
        #expect(try fileBytes(dir.file("streamed.safetensors")) == fileBytes(dir.file("whole.safetensors")))
    }

    /// Non-contiguous tensors are written in row-major order of their logical elements,
    /// packed chunk by chunk (small chunks here to exercise both packing paths).
    @Test func nonContiguousSources() throws {
        // base[j][i] = v(i*4 + j), so base.transposed()[i][j] = v(row-major index).
        let rows = 6, cols = 4
        var baseValues = [Float](repeating: 0, count: rows * cols)
        for i in 0..<rows { for j in 0..<cols { baseValues[j * rows + i] = Float(i * cols + j) } }
        let transposed = Tensor(shape: [cols, rows], values: baseValues).transposed()
        #expect(!transposed.isContiguous && transposed.shape == [rows, cols])
        let expected = (0..<(rows * cols)).map { Float($0) }
        for chunkBytes in [1, 8, 16, 40, 1 << 20] {
            var collected: [UInt8] = []
            try SafeTensorsWriter.streamElements(of: transposed, chunkBytes: chunkBytes) { collected += $0 }
            let floats = collected.withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
            #expect(floats == expected, "chunk \(chunkBytes)")
        }
        // Rank 3 with a strided middle axis, through the file.
        let cube = Tensor(shape: [2, 3, 4], values: (0..<24).map(Float.init)).sliced(axis: 1, 0..<3, step: 2)
        let dir = try TemporaryDirectory()
        var w = SafeTensorsWriter()
        w.add("t", tensor: transposed)
        w.add("c", tensor: cube)
        try w.write(to: dir.file("nc.safetensors"))
        let file = try SafeTensorsFile(path: dir.file("nc.safetensors"))
        #expect(try file.tensor(named: "t").floats == expected)
        #expect(try file.tensor(named: "c").shape == [2, 2, 4])
        #expect(try file.tensor(named: "c").floats == [0, 1, 2, 3, 8, 9, 10, 11, 12, 13, 14, 15, 20, 21, 22, 23])
    }

    @Test func everyDTypeAndEdgeShapeRoundTrips() throws {
        let dir = try TemporaryDirectory()
        var w = SafeTensorsWriter()
        var expected: [(String, DType, Int, [Int])] = []
        for (k, dtype) in DType.allCases.enumerated() {
            for (s, shape) in [[2, 3], [], [0], [3, 0, 2]].enumerated() {
                let name = "\(dtype.rawValue)_\(s)"
                w.add(name, tensor: Formula.tensor(dtype, k: k, shape: shape))
                expected.append((name, dtype, k, shape))
            }
        }
        try w.write(to: dir.file("all.safetensors"))
        let file = try SafeTensorsFile(path: dir.file("all.safetensors"))
        #expect(file.tensorInfos.count == expected.count)
        for (name, dtype, k, shape) in expected {
            let t = try file.tensor(named: name)
            #expect(t.dtype == dtype && t.shape == shape)
            #expect(rawBytes(t) == Formula.bytes(dtype, k: k, shape: shape), "\(name)")
        }
        // File order: reference dtype rank descending, then name.
        let ranks = file.tensorInfos.map { SafeTensorsFormat.referenceRank($0.dtype) }
        #expect(ranks == ranks.sorted(by: >))
        #expect(file.tensorInfos.first?.dtype == .i64 && file.tensorInfos.last?.dtype == .bool)
    }
}

@Suite struct WriterSafetyTests {
    private func existing(_ dir: TemporaryDirectory, _ name: String = "dest.safetensors") throws -> (String, [UInt8]) {
        let path = dir.file(name)
        try SafeTensorsWriter.write(["old": Tensor(shape: [2], values: [1, 2])], to: path)
        return (path, try fileBytes(path))
    }

    private func expectUntouched(_ dir: TemporaryDirectory, _ path: String, _ before: [UInt8],
                                 extra: [String] = []) throws {
        #expect(try fileBytes(path) == before)
        #expect(try dir.entries() == ([(path as NSString).lastPathComponent] + extra).sorted(), "temporary file left behind")
    }

    @Test func refusesAFileOpenForReading() throws {
        let dir = try TemporaryDirectory()
        let (path, before) = try existing(dir)
        var reader: SafeTensorsFile? = try SafeTensorsFile(path: path)
        var view: Tensor? = try reader!.tensor(named: "old")
        var w = SafeTensorsWriter()
        w.add("new", tensor: Tensor(scalar: 3))
        #expect(throws: SafeTensorsError(file: path, rule: .outputOpenForReading)) { try w.write(to: path) }
        // Through another name for the same inode (hard link) and a symlink.
        try FileManager.default.linkItem(atPath: path, toPath: dir.file("hard.safetensors"))
        try FileManager.default.createSymbolicLink(atPath: dir.file("sym.safetensors"), withDestinationPath: path)
        #expect(throws: SafeTensorsError(file: dir.file("hard.safetensors"), rule: .outputOpenForReading)) {
            try w.write(to: dir.file("hard.safetensors"))
        }
        #expect(throws: SafeTensorsError(file: dir.file("sym.safetensors"), rule: .outputOpenForReading)) {
            try w.write(to: dir.file("sym.safetensors"))
        }
        try FileManager.default.removeItem(atPath: dir.file("hard.safetensors"))
        try FileManager.default.removeItem(atPath: dir.file("sym.safetensors"))
        // A view keeps the file mapped after the reader is gone: still refused.
        reader = nil
        #expect(throws: SafeTensorsError(file: path, rule: .outputOpenForReading)) { try w.write(to: path) }
        #expect(view?.floats == [1, 2])
        try expectUntouched(dir, path, before)
        // Once nothing maps it, writing is allowed.
        view = nil
        try w.write(to: path)
        #expect(try SafeTensorsFile(path: path).names == ["new"])
    }

    /// Writing a file from its own tensors is the typical "output == input" mistake.
    @Test func refusesItsOwnInput() throws {
        let dir = try TemporaryDirectory()
        let (path, before) = try existing(dir)
        let input = try SafeTensorsFile(path: path)
        var w = SafeTensorsWriter()
        w.add("old", tensor: try input.tensor(named: "old"))
        #expect(throws: SafeTensorsError(file: path, rule: .outputOpenForReading)) { try w.write(to: path) }
        try expectUntouched(dir, path, before)
    }

    @Test func refusesADeclaredInputPath() throws {
        let dir = try TemporaryDirectory()
        let (path, before) = try existing(dir)
        var w = SafeTensorsWriter()
        w.inputPaths = [dir.file("other"), dir.path + "/./dest.safetensors"]
        w.add("x", dtype: .u8, shape: [1]) { sink in try [UInt8(1)].withUnsafeBytes { try sink($0) } }
        #expect(throws: SafeTensorsError(file: path, rule: .outputIsInput(input: dir.path + "/./dest.safetensors"))) {
            try w.write(to: path)
        }
        try expectUntouched(dir, path, before)
    }

    @Test func sourceProducingTooFewOrTooManyBytes() throws {
        let dir = try TemporaryDirectory()
        let (path, before) = try existing(dir)
        for produced in [7, 9, 0] {
            var w = SafeTensorsWriter()
            w.add("a", tensor: Tensor(shape: [4], values: [1, 2, 3, 4]))
            w.add("s", dtype: .u8, shape: [8]) { sink in
                try [UInt8](repeating: 1, count: produced).withUnsafeBytes { try sink($0) }
            }
            #expect(throws: SafeTensorsError(file: path, tensor: "s", rule: .sourceSizeMismatch(expected: 8, produced: produced))) {
                try w.write(to: path)
            }
            try expectUntouched(dir, path, before)
        }
    }

    /// A source that swallows the sink's error still cannot produce a committed file.
    @Test func sourceSwallowingTheSinkError() throws {
        let dir = try TemporaryDirectory()
        let (path, before) = try existing(dir)
        var w = SafeTensorsWriter()
        w.add("s", dtype: .u8, shape: [2]) { sink in
            for _ in 0..<3 { try? [UInt8(1)].withUnsafeBytes { try sink($0) } }
        }
        #expect(throws: SafeTensorsError(file: path, tensor: "s", rule: .sourceSizeMismatch(expected: 2, produced: 3))) {
            try w.write(to: path)
        }
        try expectUntouched(dir, path, before)
    }

    struct SourceFailure: Error, Equatable {}

    @Test func sourceErrorIsRethrownAndNothingIsLeft() throws {
        let dir = try TemporaryDirectory()
        let (path, before) = try existing(dir)
        var w = SafeTensorsWriter()
        w.add("s", dtype: .f32, shape: [1 << 20]) { sink in
            try [UInt8](repeating: 0, count: 3 << 20).withUnsafeBytes { try sink($0) }  // past the buffer: really written
            throw SourceFailure()
        }
        #expect(throws: SourceFailure()) { try w.write(to: path) }
        try expectUntouched(dir, path, before)
    }

    @Test func invalidDeclarationsCreateNothing() throws {
        let dir = try TemporaryDirectory()
        let path = dir.file("new.safetensors")
        let cases: [(SafeTensorsWriter, String, SafeTensorsError.Rule)] = [
            ({ var w = SafeTensorsWriter(); w.add("a", tensor: Tensor(scalar: 1)); w.add("a", tensor: Tensor(scalar: 2)); return w }(),
             "a", .duplicateTensorName),
            ({ var w = SafeTensorsWriter(); w.add("__metadata__", tensor: Tensor(scalar: 1)); return w }(),
             "__metadata__", .reservedTensorName),
            ({ var w = SafeTensorsWriter(); w.add("n", dtype: .f32, shape: [2, -1]) { _ in }; return w }(),
             "n", .invalidTensorShape(shape: [2, -1])),
            ({ var w = SafeTensorsWriter(); w.add("o", dtype: .f64, shape: [1 << 40, 1 << 40]) { _ in }; return w }(),
             "o", .invalidTensorShape(shape: [1 << 40, 1 << 40])),
        ]
        for (writer, tensor, rule) in cases {
            #expect(throws: SafeTensorsError(file: path, tensor: tensor, rule: rule)) { try writer.write(to: path) }
        }
        #expect(try dir.entries().isEmpty)
    }

    @Test func missingDirectoryIsAnIOError() throws {
        let dir = try TemporaryDirectory()
        let path = dir.file("no/such/dir/x.safetensors")
        do {
            try SafeTensorsWriter.write(["a": Tensor(scalar: 1)], to: path)
            Issue.record("expected an error")
        } catch let error as SafeTensorsError {
            guard case .ioFailure(let operation, let reason) = error.rule else {
                Issue.record("unexpected \(error)"); return
            }
            #expect(operation.hasPrefix("creating ") && reason == "No such file or directory")
            #expect(error.file == path)
        }
    }

    /// Replacing a file goes through rename: a reader of the old file (in another process,
    /// simulated here by a raw mapping we do not register) keeps seeing the old contents.
    @Test func replacementIsAtomic() throws {
        let dir = try TemporaryDirectory()
        let (path, before) = try existing(dir)
        let oldMapping = try MappedFile(path: path)
        let oldInode = FileIdentity(path: path)
        try SafeTensorsWriter.write(["new": Tensor(shape: [3], values: [7, 8, 9])], to: path)
        #expect(FileIdentity(path: path) != oldInode)
        #expect(Array(UnsafeRawBufferPointer(start: oldMapping.bytes, count: oldMapping.byteCount)) == before)
        #expect(try SafeTensorsFile(path: path).tensor(named: "new").floats == [7, 8, 9])
        #expect(try dir.entries() == ["dest.safetensors"])
    }
}
