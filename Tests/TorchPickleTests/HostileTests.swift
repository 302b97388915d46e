import Foundation
import Testing
@testable import TorchPickle

/// Files the reader must refuse. The evil_* payloads were checked by the generator to create
/// their marker file under torch.load(weights_only=False); here the marker must stay absent.
@Suite struct HostileTests {
    static let refusedFiles = Fixtures.expected.refusals.keys.sorted()

    @Test(arguments: refusedFiles)
    func refusesWithTheExpectedRule(_ name: String) throws {
        let expected = try #require(Fixtures.expected.refusals[name])
        if let marker = expected.marker { try? FileManager.default.removeItem(atPath: marker) }
        let path = Fixtures.path(name)
        let error = try #require(caught { try TorchFile(path: path) }, "\(name) was accepted")
        switch expected.rule {
        case "refusedGlobal":
            let module = try #require(expected.module), global = try #require(expected.name)
            #expect(error.rule == .refusedGlobal(module: module, name: global))
            #expect(error.description == "\(path): refuses global \(module).\(global) "
                    + "(only tensor rebuild functions, storage types and OrderedDict are allowed)")
        case "notCallable":
            #expect(error.rule == .notCallable(callee: try #require(expected.callee)))
        case "zipCompressedEntry":
            #expect(error.rule == .zipCompressedEntry(entry: try #require(expected.entry), method: try #require(expected.method)))
        case "bigEndian":
            #expect(error.rule == .bigEndian)
        case "torchScriptArchive":
            #expect(error.rule == .torchScriptArchive)
        default:
            Issue.record("unknown rule \(expected.rule) in expected.json")
        }
        if let marker = expected.marker {
            #expect(!FileManager.default.fileExists(atPath: marker), "\(name): the payload ran")
        }
        // Same verdict from memory.
        #expect(caught { try TorchFile(bytes: try! Fixtures.bytes(name), name: name) }?.rule == error.rule)
    }

    @Test func exactMessageForOSSystem() throws {
        let error = caught { try TorchFile(bytes: try! Fixtures.bytes("evil_global_os_system.pt"), name: "file.pt") }
        #expect(error?.description
                == "file.pt: refuses global os.system (only tensor rebuild functions, storage types and OrderedDict are allowed)")
    }

    @Test func everyFixtureWithAMarkerIsCovered() {
        // The generator's hostile set: GLOBAL and STACK_GLOBAL forms, INST, nested in a valid embedding.
        let globals = Set(Fixtures.expected.refusals.values.compactMap { r in r.marker.map { _ in "\(r.module!).\(r.name!)" } })
        #expect(globals.isSuperset(of: ["os.system", "posix.system", "builtins.eval", "builtins.exec",
                                        "__builtin__.exec", "subprocess.Popen"]))
    }

    // MARK: Crafted in Swift

    @Test(arguments: [
        ("os", "system"), ("posix", "system"), ("nt", "system"), ("builtins", "eval"), ("builtins", "exec"),
        ("builtins", "getattr"), ("builtins", "__import__"), ("__builtin__", "eval"), ("subprocess", "Popen"),
        ("subprocess", "check_output"), ("torch", "load"), ("torch.nn.modules.linear", "Linear"),
        ("torch._tensor", "_rebuild_from_type_v2"), ("torch._utils", "_rebuild_qtensor"), ("copyreg", "_reconstructor"),
        ("numpy.core.multiarray", "_reconstruct"), ("torch", "device"), ("collections", "OrderedDict.fromkeys"),
        ("torch.serialization", "_get_layout"), ("pytorch_lightning.callbacks.model_checkpoint", "ModelCheckpoint.__init__"),
    ])
    func refusesGlobalsByName(_ module: String, _ name: String) {
        let pickle = P.proto() + P.global(module, name) + P.emptyTuple + P.reduce + P.stop
        #expect(caught { try TorchPickle.parse(pickle) }?.rule == .refusedGlobal(module: module, name: name))
        let stackGlobal = P.proto(4) + [0x8C, UInt8(module.utf8.count)] + Array(module.utf8)
            + [0x8C, UInt8(name.utf8.count)] + Array(name.utf8) + [0x93] + P.emptyTuple + P.reduce + P.stop
        #expect(caught { try TorchPickle.parse(stackGlobal) }?.rule == .refusedGlobal(module: module, name: name))
        let inZip = torchZip(pickle: pickle)
        #expect(caught { try TorchFile(bytes: inZip, name: "x.pt") }?.rule == .refusedGlobal(module: module, name: name))
    }

    @Test func refusesCallingTagsAndClasses() {
        for (module, name) in [("torch", "FloatStorage"), ("torch.storage", "UntypedStorage"), ("torch", "float32"),
                               ("pytorch_lightning.callbacks.model_checkpoint", "ModelCheckpoint"),
                               ("torch.nn.modules.container", "ParameterDict")] {
            let pickle = P.proto() + P.global(module, name) + P.emptyTuple + P.reduce + P.stop
            #expect(caught { try TorchPickle.parse(pickle) }?.rule == .notCallable(callee: "\(module).\(name)"))
        }
        // NEWOBJ on anything but ParameterDict/OrderedDict.
        let newObj = P.proto() + P.global("torch", "FloatStorage") + P.emptyTuple + P.newObj + P.stop
        #expect(caught { try TorchPickle.parse(newObj) }?.rule == .notCallable(callee: "torch.FloatStorage"))
        // REDUCE whose callee is not a global at all.
        let onString = P.proto() + P.string("os.system") + P.emptyTuple + P.reduce + P.stop
        #expect(caught { try TorchPickle.parse(onString) }?.rule == .notCallable(callee: "a str value"))
    }

    @Test func refusesOpcodesThatReachCodeIndirectly() {
        // EXT1 names a global through copyreg's extension registry: refused outright.
        let ext = P.proto() + [0x82, 0x01] + P.emptyTuple + P.reduce + P.stop
        #expect(caught { try TorchPickle.parse(ext) }?.rule == .unsupportedOpcode("EXT1", at: .init(stream: "pickle", offset: 2)))
        // INST with an allowed class is still refused (torch never writes it).
        let inst = P.mark + Array("icollections\nOrderedDict\n".utf8) + P.stop
        #expect(caught { try TorchPickle.parse(inst) }?.rule == .unsupportedOpcode("INST", at: .init(stream: "pickle", offset: 1)))
        // BUILD on an object that never receives state (a set).
        let build = P.proto(4) + [0x8F] + P.emptyDict + P.build + P.stop
        #expect(caught { try TorchPickle.parse(build) }?.rule == .buildRefused(target: "a set"))
    }

    @Test func refusesNonStoragePersistentIDs() {
        // Legacy files can pickle nn.Module classes as ('module', cls, source_file, source).
        let module = P.mark + P.string("module") + P.none + P.none + P.none + P.tuple + P.binPersID
        let zip = torchZip(pickle: P.dict("m", module))
        #expect(caught { try TorchFile(bytes: zip) }?.rule == .refusedPersistentID(kind: "module"))
        // Standalone pickles may not refer to storages at all.
        let storage = P.proto() + P.mark + P.string("storage") + P.tuple + P.binPersID + P.stop
        #expect(caught { try TorchPickle.parse(storage) }?.rule == .badPersistentID(reason: "this pickle may not refer to storages"))
    }

    @Test func allowedPlainValueSpellings() throws {
        // set / frozenset / bytes / torch.Size as protocol 2 spells them.
        let pickle = P.proto() + P.mark
            + P.global("__builtin__", "set") + P.mark + P.int(3) + P.int(1) + P.int(3) + [0x6C] + P.tuple1 + P.reduce
            + P.global("builtins", "frozenset") + P.emptyTuple + P.reduce
            + P.global("_codecs", "encode") + P.string("\u{00}\u{FF}") + P.string("latin1") + P.tuple2 + P.reduce
            + P.global("__builtin__", "bytes") + P.emptyTuple + P.reduce
            + P.global("torch", "Size") + P.intTuple([4, 5]) + P.tuple1 + P.reduce
            + P.tuple + P.stop
        let value = try TorchPickle.parse(pickle)
        #expect(Tagged(value) == .tuple([.set([.int(1), .int(3)]), .set([]), .bytes("00ff"), .bytes(""),
                                          .tuple([.int(4), .int(5)])]))
        // _codecs.encode with another codec is refused (it would not be a Latin-1 byte string).
        let utf8 = P.proto() + P.global("_codecs", "encode") + P.string("é") + P.string("utf-8") + P.tuple2 + P.reduce + P.stop
        #expect(caught { try TorchPickle.parse(utf8) }?.rule == .badArguments(callee: "_codecs.encode", reason: "expected (str, 'latin1')"))
    }
}
