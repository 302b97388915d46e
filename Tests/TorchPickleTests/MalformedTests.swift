import Foundation
import Testing
@testable import TorchPickle

/// Damaged and hostile bytes: always a typed error naming the file and the rule, never a crash.
@Suite struct MalformedTests {
    /// A small valid pickle using most opcode families (protocol 2 and 4).
    static let smallPickle: [UInt8] = P.proto() + P.emptyDict + P.put(0) + P.mark
        + P.string("a") + P.int(-5) + P.string("b") + P.emptyList + P.put(1) + P.mark + [0x4B, 7] + [0x4D, 0x34, 0x12] + [0x65]
        + P.string("c") + [0x47] + P.le(UInt64(0.5.bitPattern).bigEndian) + P.string("d") + P.get(1)
        + P.string("e") + P.global("collections", "OrderedDict") + P.emptyTuple + P.reduce
        + P.string("f") + [0x8A, 0x09] + [UInt8](repeating: 0xFF, count: 8) + [0x00]
        + P.string("g") + [0x55, 0x02] + Array("hi".utf8) + P.string("h") + [0x88, 0x89, 0x86]
        + P.setItems + P.stop

    @Test func smallPickleReads() throws {
        let v = try TorchPickle.parse(Self.smallPickle)
        let d = try #require(v.dictValue)
        #expect(d["a"]?.intValue == -5)
        #expect(Tagged(d["b"]!) == .list([.int(7), .int(0x1234)]))
        #expect(d["c"]?.doubleValue == 0.5)
        #expect(Tagged(d["d"]!) == Tagged(d["b"]!))
        #expect(d["e"]?.dictValue?.count == 0)
        #expect(Tagged(d["f"]!) == .bigint("18446744073709551615"))
        #expect(d["g"]?.stringValue == "hi")
        #expect(Tagged(d["h"]!) == .tuple([.bool(true), .bool(false)]))
    }

    @Test func everyTruncationOfAPickleFails() {
        for n in 0..<Self.smallPickle.count {
            let error = caught { try TorchPickle.parse(Array(Self.smallPickle.prefix(n)), file: "t.pkl") }
            #expect(error != nil && error!.file == "t.pkl", "prefix \(n) accepted")
        }
    }

    @Test(arguments: ["views.pt", "legacy.pt", "zip64.pt"])
    func everyTruncationOfAFileFails(_ name: String) throws {
        let bytes = try Fixtures.bytes(name)
        for n in 0..<bytes.count {
            let error = caught { try TorchFile(bytes: Array(bytes.prefix(n)), name: name) }
            #expect(error != nil, "\(name) truncated to \(n) bytes was accepted")
        }
    }

    @Test func corruptedBytesNeverCrash() throws {
        // Every byte of data.pkl (and of the whole of legacy.pt) corrupted in turn.
        for name in ["nested.pt", "legacy.pt"] {
            let bytes = try Fixtures.bytes(name)
            var range = 0..<bytes.count
            if name != "legacy.pt" {  // zip: mutate data.pkl only
                let data = try bytes.withUnsafeBytes { buffer in
                    let archive = try ZipArchive(bytes: buffer, file: name)
                    return try archive.dataRange(of: archive.entries.first { $0.name.hasSuffix("/data.pkl") }!)
                }
                range = data
            }
            var outcomes = (accepted: 0, refused: 0)
            for i in range {
                // One corruption per byte, cycling through zero, all ones and a flipped low bit.
                let value: UInt8 = [0x00, 0xFF, bytes[i] ^ 0x01][i % 3]
                guard value != bytes[i] else { continue }
                var copy = bytes
                copy[i] = value
                if caught({ try TorchFile(bytes: copy, name: name) }) == nil { outcomes.accepted += 1 } else { outcomes.refused += 1 }
            }
            #expect(outcomes.refused > 0, "\(name): no corruption was noticed")
        }
    }

    // MARK: The pickle machine's rules

    private func rule(_ bytes: [UInt8]) -> TorchPickleError.Rule? { caught { try TorchPickle.parse(bytes) }?.rule }
    private func at(_ offset: Int) -> TorchPickleError.Position { .init(stream: "pickle", offset: offset) }

    @Test func machineRules() {
        #expect(rule([0xFF]) == .unknownOpcode(0xFF, at: at(0)))
        #expect(rule(P.proto(6) + P.none + P.stop) == .unsupportedProtocol(6, at: at(0)))
        #expect(rule(P.proto() + P.stop) == .stackUnderflow(opcode: "STOP", at: at(2)))
        #expect(rule(P.proto() + P.none + P.tuple + P.stop) == .stackUnderflow(opcode: "TUPLE", at: at(3)))
        #expect(rule(P.proto() + P.none + P.none + P.reduce + P.stop) == .notCallable(callee: "a None value"))
        #expect(rule(P.proto() + P.emptyTuple + P.reduce + P.stop) == .stackUnderflow(opcode: "REDUCE", at: at(3)))
        // Items below a mark are out of reach until the mark is consumed.
        #expect(rule(P.proto() + P.none + P.mark + P.tuple1 + P.stop) == .stackUnderflow(opcode: "TUPLE1", at: at(4)))
        #expect(rule(P.proto() + P.get(3) + P.stop) == .memoMiss(index: 3, at: at(2)))
        #expect(rule(P.proto() + [0x58] + P.le(UInt32.max) + P.stop) == .lengthTooLarge(length: UInt64(UInt32.max), at: at(2)))
        #expect(rule(P.proto(4) + [0x8D] + P.le(UInt64(1) << 63) + P.stop) == .lengthTooLarge(length: UInt64(1) << 63, at: at(2)))
        #expect(rule(P.proto(4) + [0x95] + P.le(UInt64.max) + P.none + P.stop) == .lengthTooLarge(length: UInt64.max, at: at(2)))
        #expect(rule(P.proto() + [0x8B] + P.le(Int32(-1)) + P.stop)
                == .invalidOperand(opcode: "LONG4", reason: "negative byte count -1", at: at(2)))
        #expect(rule(P.proto() + [0x58] + P.le(UInt32(2)) + [0xC3, 0x28] + P.stop)
                == .invalidOperand(opcode: "BINUNICODE", reason: "string is not valid UTF-8", at: at(2)))
        #expect(rule(P.proto() + P.none + P.none + P.append + P.stop)
                == .invalidOperand(opcode: "APPEND", reason: "target is not a list", at: at(4)))
        #expect(rule(P.proto() + P.emptyTuple + P.none + P.none + P.setItem + P.stop)
                == .invalidOperand(opcode: "SETITEM", reason: "target is not a dict", at: at(5)))
        #expect(rule(P.proto() + P.emptyDict + P.emptyList + P.none + P.setItem + P.stop) == .unhashableKey(type: "list"))
        #expect(rule(P.proto() + P.none + P.stop + P.none) == .trailingData(at: at(4)))
        #expect(rule([0x97]) == .unsupportedOpcode("NEXT_BUFFER", at: at(0)))
    }

    @Test func protocolZeroText() throws {
        // INT, LONG, FLOAT, STRING, UNICODE, PUT/GET, LIST/APPEND: what protocol 0 writes.
        let text = "(lp0\nI42\np1\naI01\naL-18446744073709551616L\naF0.25\naS'a\\x41\\n'\naVcaf\\u00e9\nag1\na."
        let v = try TorchPickle.parse(Array(text.utf8))
        guard case .list(let items) = v else { Issue.record("not a list"); return }
        #expect(items.count == 7 && items.last?.intValue == 42)
        #expect(Tagged(.list(Array(items.prefix(6)))) == .list([.int(42), .bool(true), .bigint("-18446744073709551616"),
                                                                 .float(0.25), .str("aA\n"), .str("café")]))
        #expect(rule(Array("I12x\n.".utf8)) == .invalidOperand(opcode: "INT", reason: "\"12x\" is not a decimal integer", at: at(0)))
    }

    @Test func deepNestingIsAnErrorNotACrash() {
        // 200 000 nested lists: built iteratively, refused when converted, released without recursion.
        let depth = 200_000
        let bomb = P.proto() + [UInt8](repeating: 0x5D, count: depth) + [UInt8](repeating: 0x61, count: depth - 1) + P.stop
        #expect(rule(bomb) == .nestingTooDeep(limit: 100))
        // Nested tuples as a dict key.
        let keyBomb = P.proto() + P.emptyDict + P.none + [UInt8](repeating: 0x85, count: depth) + P.none + P.setItem + P.stop
        #expect(rule(keyBomb) == .nestingTooDeep(limit: 100))
        // Just under the limit is fine.
        let fine = P.proto() + [UInt8](repeating: 0x5D, count: 100) + [UInt8](repeating: 0x61, count: 99) + P.stop
        #expect(rule(fine) == nil)
    }

    @Test func cyclesAreAnError() {
        // l = []; l.append(l)
        let cycle = P.proto() + P.emptyList + P.put(0) + P.get(0) + P.append + P.stop
        #expect(rule(cycle) == .cyclicReference)
        // d = {}; d['self'] = d
        let dictCycle = P.proto() + P.emptyDict + P.put(0) + P.string("self") + P.get(0) + P.setItem + P.stop
        #expect(rule(dictCycle) == .cyclicReference)
    }

    @Test func exponentialSharingIsAnError() {
        // l0 = [0]; l(i+1) = [l(i), l(i)] (each in the memo at index i): 2^60 leaves from ~1 KB.
        var b: [UInt8]
        b = P.proto(4) + P.emptyList + P.put(0) + P.int(0) + P.append
        for i in 0..<60 {
            b += P.emptyList + [0x72] + P.le(UInt32(i + 1)) + P.mark + [0x6A] + P.le(UInt32(i)) + [0x6A] + P.le(UInt32(i)) + [0x65]
            b += [0x30]  // POP the new list (it stays in the memo)
        }
        b += [0x6A] + P.le(UInt32(60)) + P.stop
        let limits = TorchPickle.Limits(expansionAllowance: 10_000)
        #expect(caught { try TorchPickle.parse(b, limits: limits) }?.rule == .expansionLimit(limit: 4 * 427 + 10_000))  // 427 opcodes
        // Moderate sharing is fine: 2^10 leaves from 10 levels.
        var ok = P.proto(4) + P.emptyList + P.put(0) + P.int(0) + P.append
        for i in 0..<10 {
            ok += P.emptyList + [0x72] + P.le(UInt32(i + 1)) + P.mark + [0x6A] + P.le(UInt32(i)) + [0x6A] + P.le(UInt32(i)) + [0x65] + [0x30]
        }
        ok += [0x6A] + P.le(UInt32(10)) + P.stop
        #expect(caught { try TorchPickle.parse(ok, limits: limits) } == nil)
    }

    @Test func containerLimit() {
        let many = P.proto() + P.emptyList + [UInt8](repeating: 0x5D, count: 50).flatMap { [$0, 0x61] } + P.stop
        let limits = TorchPickle.Limits(maxContainers: 10)
        #expect(caught { try TorchPickle.parse(many, limits: limits) }?.rule == .tooManyObjects(limit: 10))
        #expect(caught { try TorchPickle.parse(many) } == nil)
    }

    // MARK: Tensor views against their storage

    private func zipRule(_ tensor: [UInt8], storage: [UInt8] = floatBytes(6)) -> TorchPickleError.Rule? {
        caught { try TorchFile(bytes: torchZip(pickle: P.dict("t", tensor), storages: [("0", storage)]), name: "v.pt") }?.rule
    }

    @Test func validViewReads() throws {
        let file = try TorchFile(bytes: torchZip(pickle: P.dict("t", P.tensorV2(numel: 6, offset: 1, size: [2, 2], stride: [1, 2])),
                                                  storages: [("0", floatBytes(6))]), name: "v.pt")
        #expect(file.tensor(named: "t")?.doubles == [1, 3, 2, 4])
    }

    @Test func viewsOutsideTheStorage() {
        func oob(_ r: TorchPickleError.Rule?) -> Bool { if case .tensorOutOfBounds(storage: "0", _)? = r { return true } else { return false } }
        #expect(oob(zipRule(P.tensorV2(numel: 6, offset: 0, size: [3, 3], stride: [3, 1]))))
        #expect(oob(zipRule(P.tensorV2(numel: 6, offset: 6, size: [1], stride: [1]))))
        #expect(oob(zipRule(P.tensorV2(numel: 6, offset: 7, size: [0], stride: [1]))))
        #expect(oob(zipRule(P.tensorV2(numel: 6, offset: -1, size: [1], stride: [1]))))
        #expect(oob(zipRule(P.tensorV2(numel: 6, offset: 0, size: [2], stride: [-1]))))
        #expect(oob(zipRule(P.tensorV2(numel: 6, offset: 0, size: [-2], stride: [1]))))
        #expect(oob(zipRule(P.tensorV2(numel: 6, offset: 0, size: [2, 2], stride: [5, 1]))))
        #expect(oob(zipRule(P.tensorV2(numel: 6, offset: 0, size: [2], stride: [Int(Int32.max)]))))
        // Sizes whose product overflows, even with a zero dimension after them.
        let huge = P.global("torch._utils", "_rebuild_tensor_v2") + P.mark
            + P.mark + P.string("storage") + P.global("torch", "FloatStorage") + P.string("0") + P.string("cpu") + P.int(6) + P.tuple + P.binPersID
            + P.int(0) + P.mark + [0x8A, 0x08] + P.le(Int64(1) << 40) + [0x8A, 0x08] + P.le(Int64(1) << 40) + P.int(0) + P.tuple
            + P.intTuple([1, 1, 1]) + P.newFalse + P.global("collections", "OrderedDict") + P.emptyTuple + P.reduce + P.tuple + P.reduce
        #expect(oob(zipRule(huge)))
        // The storage record must be exactly numel × element size.
        #expect(zipRule(P.tensorV2(numel: 6, offset: 0, size: [6], stride: [1]), storage: floatBytes(5))
                == .storageSizeMismatch(key: "0", expectedBytes: 24, actualBytes: 20))
        #expect(zipRule(P.tensorV2(key: "9", numel: 6, offset: 0, size: [6], stride: [1])) == .missingRecord(name: "archive/data/9"))
        #expect(zipRule(P.tensorV2(storageType: "ComplexFloatStorage", numel: 6, offset: 0, size: [1], stride: [1]))
                == .unsupportedDType("torch.ComplexFloatStorage"))
        #expect(zipRule(P.tensorV2(numel: 6, offset: 0, size: [2], stride: [1, 1]))
                == .badArguments(callee: "torch._utils._rebuild_tensor_v2", reason: "size has 1 dimensions and stride 2 (at most 64)"))
    }

    @Test func negativeBitIsRefused() {
        // _rebuild_tensor_v2's metadata {'neg': True}: the values would be negated lazily by torch.
        var t = P.tensorV2(numel: 6, offset: 0, size: [6], stride: [1])
        t.removeLast(2)  // drop TUPLE REDUCE to append the metadata argument
        t += P.emptyDict + P.string("neg") + P.newTrue + P.setItem + P.tuple + P.reduce
        #expect(zipRule(t) == .tensorFlagsUnsupported("neg"))
    }

    // MARK: Containers

    @Test func containerRules() throws {
        #expect(caught { try TorchFile(bytes: Array("hello world".utf8), name: "x") }?.rule == .notATorchFile)
        #expect(caught { try TorchFile(bytes: [], name: "x") }?.rule == .notATorchFile)
        var tar = [UInt8](repeating: 0, count: 600)
        tar.replaceSubrange(257..<262, with: Array("ustar".utf8))
        #expect(caught { try TorchFile(bytes: tar, name: "x") }?.rule == .legacyTarFormat)
        let pickle = P.dict("a", P.int(1))
        let duplicate = makeZip([("archive/data.pkl", pickle), ("archive/data.pkl", pickle)])
        #expect(caught { try TorchFile(bytes: duplicate, name: "x") }?.rule == .zipDuplicateEntry(entry: "archive/data.pkl"))
        let twoRoots = makeZip([("a/data.pkl", pickle), ("b/data.pkl", pickle)])
        #expect(caught { try TorchFile(bytes: twoRoots, name: "x") }?.rule == .zipNoDataPickle(candidates: ["a", "b"]))
        let noRoot = makeZip([("data.pkl", pickle)])
        #expect(caught { try TorchFile(bytes: noRoot, name: "x") }?.rule == .zipNoDataPickle(candidates: []))
        // Any root folder name works.
        let renamed = try TorchFile(bytes: makeZip([("my.model-v2/data.pkl", pickle)]), name: "x")
        #expect(renamed.format == .zip(root: "my.model-v2") && renamed.values["a"]?.intValue == 1)
        // A local header offset pointing outside the file.
        var broken = makeZip([("archive/data.pkl", pickle)])
        let directory = broken.count - 22 - (46 + 16)
        broken.replaceSubrange((directory + 42)..<(directory + 46), with: P.le(UInt32(1_000_000)))
        if case .zipMalformed? = caught({ try TorchFile(bytes: broken, name: "x") })?.rule {} else { Issue.record("bad offset accepted") }
    }

    @Test func legacyStorageRules() throws {
        let bytes = try Fixtures.bytes("legacy.pt")
        // The first storage's element count (just after the keys pickle) changed from 12 to 13.
        let start = try #require(firstStorageCountOffset(bytes))
        var wrongCount = bytes
        wrongCount[start] = 13
        guard case .legacyStorageMismatch(_, let reason)? = caught({ try TorchFile(bytes: wrongCount, name: "l.pt") })?.rule else {
            Issue.record("wrong element count accepted")
            return
        }
        #expect(reason == "data section holds 13 elements, the pickle declared 12")
    }

    /// A legacy-format file: magic, protocol version, sys_info, `main`, the storage keys, the storages.
    private func legacyFile(main: [UInt8], storages: [(key: String, count: Int, bytes: [UInt8])],
                            littleEndian: Bool = true) -> [UInt8] {
        let magic: [UInt8] = [0x6C, 0xFC, 0x9C, 0x46, 0xF9, 0x20, 0x6A, 0xA8, 0x50, 0x19]
        var out = P.proto() + [0x8A, 0x0A] + magic + P.stop
        out += P.proto() + [0x4D] + P.le(UInt16(1001)) + P.stop
        out += P.proto() + P.emptyDict + P.string("little_endian") + (littleEndian ? P.newTrue : P.newFalse) + P.setItem + P.stop
        out += main
        out += P.proto() + P.mark + storages.flatMap { P.string($0.key) } + [0x6C] + P.stop
        for s in storages { out += P.le(Int64(s.count)) + s.bytes }
        return out
    }

    /// A pre-0.4 style tensor over a storage view: ('storage', FloatStorage, 'root', 'cpu', 6, ('view', 2, 3)).
    private func viewTensor(size: Int) -> [UInt8] {
        P.dict("t", P.global("torch._utils", "_rebuild_tensor") + P.mark
               + P.mark + P.string("storage") + P.global("torch", "FloatStorage") + P.string("root") + P.string("cpu")
               + P.int(6) + P.mark + P.string("view") + P.int(2) + P.int(3) + P.tuple + P.tuple + P.binPersID
               + P.int(0) + P.intTuple([size]) + P.intTuple([1]) + P.tuple + P.reduce)
    }

    @Test func legacyStorageViews() throws {
        let file = try TorchFile(bytes: legacyFile(main: viewTensor(size: 3), storages: [("root", 6, floatBytes(6))]), name: "v.pt")
        #expect(file.format == .legacy)
        #expect(file.tensor(named: "t")?.doubles == [2, 3, 4])
        // Inside the root storage but past the view's 3 elements.
        let past = caught { try TorchFile(bytes: legacyFile(main: viewTensor(size: 4), storages: [("root", 6, floatBytes(6))]), name: "v.pt") }
        if case .tensorOutOfBounds(storage: "root", _)? = past?.rule {} else { Issue.record("view overrun accepted: \(String(describing: past))") }
        // Data section problems.
        #expect(caught { try TorchFile(bytes: legacyFile(main: viewTensor(size: 3), storages: []), name: "v.pt") }?.rule
                == .legacyStorageMismatch(key: "root", reason: "has no data"))
        #expect(caught { try TorchFile(bytes: legacyFile(main: viewTensor(size: 3), storages: [("root", 6, floatBytes(6)), ("root", 6, floatBytes(6))]), name: "v.pt") }?.rule
                == .legacyStorageMismatch(key: "root", reason: "is listed twice"))
        #expect(caught { try TorchFile(bytes: legacyFile(main: viewTensor(size: 3), storages: [("other", 6, floatBytes(6))]), name: "v.pt") }?.rule
                == .legacyStorageMismatch(key: "other", reason: "is not referred to by the pickle"))
        #expect(caught { try TorchFile(bytes: legacyFile(main: viewTensor(size: 3), storages: [("root", 6, floatBytes(6))], littleEndian: false), name: "v.pt") }?.rule
                == .legacyBadSysInfo(reason: "says big-endian"))
    }

    /// Offset of the 8-byte count of legacy.pt's first storage: it holds 12 F32 values 0, 0.25, …
    private func firstStorageCountOffset(_ bytes: [UInt8]) -> Int? {
        let marker = P.le(Int64(12)) + P.le(Float(0).bitPattern) + P.le(Float(0.25).bitPattern)
        guard bytes.count >= marker.count else { return nil }
        return (0...(bytes.count - marker.count)).first { Array(bytes[$0..<($0 + marker.count)]) == marker }
    }
}
