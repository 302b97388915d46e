import Foundation
import Host
import Testing
import Tensor

/// Bad plugins (Tests/HostTests/BadPlugins/*.c, compiled at run time): each is a clear error
/// naming the plugin file, and the host keeps working with the rest.
@Suite struct PluginFailureTests {
    /// A "toy" file: modules a and b, plus the shared offset.
    static func toyFile() -> InMemoryTensorSource {
        InMemoryTensorSource(path: "toy.safetensors", tensors: [
            ("a.toy_scale", Tensor(shape: [1], values: [2])),
            ("b.toy_scale", Tensor(shape: [1], values: [3])),
            ("toy_offset", Tensor(shape: [1], values: [0.5])),
            ("unrelated", Tensor(shape: [1], values: [9])),
        ])
    }

    /// Opening `name` fails with exactly `expected(path)`.
    static func expectLoadFailure(_ name: String, _ expected: (String) -> PluginLoadError) {
        let path = PluginTestSupport.compileBadPlugin(name)
        let registry = AdapterRegistry()
        #expect(throws: expected(path)) { try PluginLoader.load(path: path, into: registry) }
        #expect(registry.methods.isEmpty)
    }

    @Test func theToyControlPluginWorks() throws {
        let path = PluginTestSupport.compileBadPlugin("toy")
        let registry = AdapterRegistry()
        let toy = try PluginLoader.load(path: path, into: registry)
        #expect(toy.id == "toy" && toy.keyPatterns == ["*.toy_scale", "toy_offset"])
        let adapter = try registry.load(Self.toyFile())
        #expect(adapter.modules.map(\.name) == ["a", "b"])
        #expect(adapter.unclaimedKeys == ["unrelated"])
        let w = Tensor(zeros: [2, 3])
        // (scale + shared offset) × strength: the shared key reached the plugin.
        let d = try #require(try adapter.modules[1].delta(weight: w, options: DeltaOptions(strength: 2)).weight)
        #expect(d.floats == [Float](repeating: 7, count: 6))
        #expect(try toy.call(function: "name") == .string("toy plugin"))
    }

    @Test func notASharedLibrary() throws {
        let dir = PluginTestSupport.workDir + "/not-a-library"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let path = dir + "/text.so"
        try "this is not an ELF file".write(toFile: path, atomically: true, encoding: .utf8)
        #expect {
            try PluginLoader.open(path: path)
        } throws: { error in
            guard case let .notALibrary(p, reason) = error as? PluginLoadError else { return false }
            return p == path && !reason.isEmpty && "\(error)".hasPrefix(path + ": not a loadable shared library")
        }
    }

    @Test func missingEntrySymbol() {
        Self.expectLoadFailure("missing_entry") { .missingEntry(path: $0) }
    }

    @Test func wrongABIVersion() {
        Self.expectLoadFailure("wrong_abi") { .abiVersion(path: $0, found: 2, expected: 1) }
    }

    @Test func descriptorSmallerThanV1() {
        Self.expectLoadFailure("small_struct") {
            .structSize(path: $0, found: 16, minimum: 104)  // sizeof(ah_plugin_descriptor) on LP64
        }
    }

    @Test func nullDescriptor() {
        Self.expectLoadFailure("null_descriptor") { .nullDescriptor(path: $0) }
    }

    @Test func nullRequiredPointer() {
        Self.expectLoadFailure("null_delta") {
            .malformedDescriptor(path: $0, reason: "required function pointer 'delta' is NULL")
        }
    }

    @Test func badMethodIDs() {
        Self.expectLoadFailure("bad_id") {
            .malformedDescriptor(path: $0, reason: "method_id 'Bad ID!' must be 1-64 characters of [a-z0-9_-]")
        }
        Self.expectLoadFailure("empty_id") {
            .malformedDescriptor(path: $0, reason: "method_id '' must be 1-64 characters of [a-z0-9_-]")
        }
    }

    @Test func badFunctionTables() {
        Self.expectLoadFailure("bad_function_arity") {
            .malformedDescriptor(path: $0, reason: "function 'f': arg_count 9 is outside 0...8")
        }
        Self.expectLoadFailure("bad_function_type") {
            .malformedDescriptor(path: $0, reason: "function 'f': argument 0 has invalid type 42")
        }
        Self.expectLoadFailure("bad_function_null") {
            .malformedDescriptor(path: $0, reason: "function 'f': fn is NULL")
        }
    }

    /// A method id already taken by a built-in.
    @Test func duplicateOfABuiltIn() throws {
        final class BuiltInToy: AdapterMethod {
            let id = "toy"
            let summary = "a built-in that happens to be called toy"
            func claim(keys: [String], metadata: [String: String]) -> [ModuleClaim] { [] }
            func load(claims: [ModuleClaim], from source: TensorSource) throws -> Adapter {
                Adapter(path: source.path, methodIDs: [id], format: id, baseModel: nil, metadata: [:], modules: [])
            }
        }
        let registry = AdapterRegistry()
        try registry.register(BuiltInToy())
        let path = PluginTestSupport.compileBadPlugin("toy")
        #expect(throws: PluginLoadError.duplicateMethod(path: path, id: "toy", existing: "built-in")) {
            try PluginLoader.load(path: path, into: registry)
        }
        #expect(registry.methods.count == 1 && registry.methods[0].origin == .builtIn)
    }

    /// A directory of good and bad plugins: the good ones load, every bad one is a failure
    /// naming its file, including a duplicate of another plugin's id.
    @Test func loadAllKeepsTheGoodPlugins() throws {
        let dir = PluginTestSupport.workDir + "/mixed"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        for example in ["vera.so", "hra.so"] where !FileManager.default.fileExists(atPath: dir + "/" + example) {
            try FileManager.default.copyItem(atPath: PluginTestSupport.examplePluginsDir + "/" + example,
                                             toPath: dir + "/" + example)
        }
        let bad = ["missing_entry", "wrong_abi", "null_descriptor", "null_delta", "bad_id", "bad_function_type"]
        for name in bad { PluginTestSupport.compileBadPlugin(name, into: dir) }
        // Files load in name order and the first id wins: "zz_" puts the impostor after vera.so.
        PluginTestSupport.compileBadPlugin("duplicate_vera", into: dir, as: "zz_duplicate_vera")
        try "garbage".write(toFile: dir + "/garbage.so", atomically: true, encoding: .utf8)
        try "not a plugin".write(toFile: dir + "/README.txt", atomically: true, encoding: .utf8)

        let registry = AdapterRegistry()
        let result = PluginLoader.loadAll(directory: dir, into: registry)
        #expect(result.loaded.map(\.id) == ["hra", "vera"])  // file name order
        #expect(registry.methods.map(\.id) == ["hra", "vera"])
        let failed = Dictionary(uniqueKeysWithValues: result.failures.map { (($0.path as NSString).lastPathComponent, $0.error) })
        #expect(Set(failed.keys) == Set(bad.map { $0 + ".so" } + ["garbage.so", "zz_duplicate_vera.so"]))
        #expect(failed["zz_duplicate_vera.so"] == .duplicateMethod(path: dir + "/zz_duplicate_vera.so", id: "vera",
                                                                   existing: "plugin \(dir)/vera.so"))
        #expect(failed["missing_entry.so"] == .missingEntry(path: dir + "/missing_entry.so"))
        // Every message names its file.
        for failure in result.failures { #expect("\(failure)".hasPrefix(failure.path + ": ")) }
        // The host still works with the plugins that loaded.
        let adapter = try registry.load(try PluginTestSupport.fixture("vera/adapter_model.safetensors"))
        #expect(adapter.modules.count == 13)
    }

    @Test func missingDirectoryIsAFailureNotACrash() {
        let registry = AdapterRegistry()
        let result = PluginLoader.loadAll(directory: "/nonexistent/adapterhost-plugins", into: registry)
        #expect(result.loaded.isEmpty)
        guard case .unreadableDirectory(let path, _)? = result.failures.first?.error else {
            Issue.record("expected an unreadable-directory failure"); return
        }
        #expect(path == "/nonexistent/adapterhost-plugins")
    }

    /// Loads the toy file with the plugin `name` and returns its first module.
    static func toyModule(_ name: String) throws -> (path: String, module: any AdapterModule) {
        let path = PluginTestSupport.compileBadPlugin(name)
        let registry = AdapterRegistry()
        try PluginLoader.load(path: path, into: registry)
        let adapter = try registry.load(toyFile())
        return (path, adapter.modules[0])
    }

    @Test func deltaOfTheWrongShape() throws {
        let (path, module) = try Self.toyModule("wrong_shape")
        let error = PluginError.badOutput(path: path, method: "wrong-shape", operation: "delta", module: "a",
                                          reason: "shape [3, 3] differs from the weight's shape [2, 3]")
        #expect(throws: error) { try module.delta(weight: Tensor(zeros: [2, 3]), options: DeltaOptions(strength: 1)) }
        #expect("\(error)".contains(path) && "\(error)".contains("'wrong-shape'") && "\(error)".contains("module 'a'"))
    }

    @Test func deltaOfTheWrongDtype() throws {
        let (path, module) = try Self.toyModule("wrong_dtype")
        #expect(throws: PluginError.badOutput(path: path, method: "wrong-dtype", operation: "delta", module: "a",
                                              reason: "dtype F16, expected F32")) {
            try module.delta(weight: Tensor(zeros: [2, 3]), options: DeltaOptions(strength: 1))
        }
    }

    @Test func stridedResultsAreCopiedThroughTheirStrides() throws {
        let (_, module) = try Self.toyModule("strided")
        let d = try #require(try module.delta(weight: Tensor(zeros: [2, 3]), options: DeltaOptions(strength: 1)).weight)
        #expect(d.isContiguous)
        #expect(d.floats == [0, 1, 2, 1000, 1001, 1002])
    }

    @Test func pluginErrorMessagesPassThrough() throws {
        let (path, module) = try Self.toyModule("delta_error")
        let error = PluginError.pluginFailed(path: path, method: "delta-error", operation: "delta", module: "a",
                                             status: 1, message: "toy_scale of this module is corrupt")
        #expect(throws: error) { try module.delta(weight: Tensor(zeros: [2, 3]), options: DeltaOptions(strength: 1)) }
        #expect("\(error)".hasSuffix("delta failed with AH_ERR_INVALID_INPUT: toy_scale of this module is corrupt"))

        let loadPath = PluginTestSupport.compileBadPlugin("load_error")
        let registry = AdapterRegistry()
        try PluginLoader.load(path: loadPath, into: registry)
        #expect(throws: PluginError.pluginFailed(path: loadPath, method: "load-error", operation: "load 'toy.safetensors'",
                                                 module: nil, status: 2, message: "this toy file version is not supported")) {
            try registry.load(Self.toyFile())
        }
    }

    @Test func claimKeyBreakingTheRules() throws {
        let path = PluginTestSupport.compileBadPlugin("bad_claim")
        let registry = AdapterRegistry()
        try PluginLoader.load(path: path, into: registry)
        #expect(throws: PluginError.badOutput(path: path, method: "bad-claim", operation: "claim_key", module: nil,
                                              reason: "claim_key returned 7 for 'a.toy_scale' (must be 0 or 1)")) {
            try registry.load(Self.toyFile())
        }
    }
}
