import Foundation
import Host
import Testing
import Tensor

/// The example plugins (plugins/vera/vera.c in C, plugins/hra/HRA.swift in Swift) loaded at run
/// time, checked against PEFT's own merged weights (tools/gen_plugin_fixtures.py).
///
/// Serialized: the plugins keep plugin-wide options (set through libffi) that these tests change.
@Suite(.serialized) struct PluginExampleTests {
    /// A registry with both example plugins loaded from their build directory.
    static func registryWithExamples() throws -> (AdapterRegistry, vera: PluginMethod, hra: PluginMethod) {
        let registry = AdapterRegistry()
        let result = PluginLoader.loadAll(directory: PluginTestSupport.examplePluginsDir, into: registry)
        #expect(result.failures.isEmpty, "\(result.failures)")
        let vera = try #require(result.loaded.first { $0.id == "vera" })
        let hra = try #require(result.loaded.first { $0.id == "hra" })
        return (registry, vera, hra)
    }

    /// For every module: W + Δ(W) against PEFT's merge_and_unload, rel 1e-5; returns the
    /// number of modules compared.
    @discardableResult
    static func expectMatchesPEFT(_ adapter: Adapter, fixture: String, tolerance: Float = 1e-5) throws -> Int {
        let base = try PluginTestSupport.fixture("\(fixture)/base.safetensors")
        let merged = try PluginTestSupport.fixture("\(fixture)/merged.safetensors")
        #expect(adapter.modules.count == base.keys.count)
        for module in adapter.modules {
            // PEFT's module names are "base_model.model.<diffusers module>".
            #expect(module.name.hasPrefix("base_model.model."))
            let key = String(module.name.dropFirst("base_model.model.".count)) + ".weight"
            let w = try base.tensor(key)
            let expected = try merged.tensor(key)
            let delta = try #require(try module.delta(weight: w, options: DeltaOptions(strength: 1)).weight)
            #expect(delta.shape == w.shape)
            // The adapter must really change the layer, or the comparison proves nothing.
            #expect(relativeMaxError(w, expected) > 1e-3, "\(key): fixture delta is negligible")
            let error = relativeMaxError(adding(w, delta), expected)
            #expect(error <= tolerance, "\(key): W+Δ differs from PEFT's merge by \(error)")
        }
        return adapter.modules.count
    }

    @Test func veraMatchesPEFTMergedWeights() throws {
        let (registry, vera, _) = try Self.registryWithExamples()
        #expect(vera.origin == .plugin(path: PluginTestSupport.examplePluginsDir + "/vera.so"))
        let source = try PluginTestSupport.fixture("vera/adapter_model.safetensors")
        let detection = try registry.detect(source)
        #expect(detection.methodIDs == ["vera"])
        // The shared projections are claimed (not reported as unclaimed) but are not modules.
        #expect(detection.unclaimedKeys.isEmpty)
        let adapter = try registry.load(source)
        #expect(adapter.modules.count == 13)
        #expect(adapter.unclaimedKeys.isEmpty)
        for module in adapter.modules {
            #expect(module.moduleType == "vera")
            #expect(module.rank == 4)
            #expect(module.alpha == nil)
            #expect(!module.dependsOnWeight)
        }
        #expect(try Self.expectMatchesPEFT(adapter, fixture: "vera") == 13)
    }

    @Test func veraStrengthScalesTheDelta() throws {
        let (registry, _, _) = try Self.registryWithExamples()
        let adapter = try registry.load(try PluginTestSupport.fixture("vera/adapter_model.safetensors"))
        let base = try PluginTestSupport.fixture("vera/base.safetensors")
        let module = try #require(adapter.modules.first { $0.name.hasSuffix("ff.net.0.proj") })
        let w = try base.tensor(String(module.name.dropFirst("base_model.model.".count)) + ".weight")
        let full = try #require(try module.delta(weight: w, options: DeltaOptions(strength: 1)).weight)
        let half = try #require(try module.delta(weight: w, options: DeltaOptions(strength: -0.5)).weight)
        let expected = Tensor(shape: full.shape, values: full.floats.map { -0.5 * $0 })
        #expect(relativeMaxError(half, expected) <= 1e-6)
    }

    @Test func veraBypassTermEqualsDenseDelta() throws {
        let (registry, _, _) = try Self.registryWithExamples()
        let adapter = try registry.load(try PluginTestSupport.fixture("vera/adapter_model.safetensors"))
        let base = try PluginTestSupport.fixture("vera/base.safetensors")
        let module = try #require(adapter.modules.first { $0.name.hasSuffix("attn2.to_k") && $0.name.contains("mid_block") })
        let w = try base.tensor(String(module.name.dropFirst("base_model.model.".count)) + ".weight")  // [16, 12]
        let (outF, inF) = (w.shape[0], w.shape[1])
        let x = Tensor(shape: [2, 3, inF], values: (0..<(6 * inF)).map { Float(($0 * 7) % 13) / 13 - 0.4 })
        let options = DeltaOptions(strength: 0.75)
        let term = try #require(try module.forwardTerm(input: x, layer: .linear, options: options))
        #expect(term.shape == [2, 3, outF])
        // Reference: x · Δᵀ with a naive loop.
        let d = try #require(try module.delta(weight: w, options: options).weight).floats
        let xs = x.floats
        var reference = [Float](repeating: 0, count: 6 * outF)
        for n in 0..<6 { for o in 0..<outF { for i in 0..<inF { reference[n * outF + o] += xs[n * inF + i] * d[o * inF + i] } } }
        #expect(relativeMaxError(term, Tensor(shape: [2, 3, outF], values: reference)) <= 1e-5)
        // A conv layer has no cheap VeRA form: the plugin answers UNSUPPORTED, the host falls back.
        let image = Tensor(zeros: [1, inF, 2, 2])
        #expect(try module.forwardTerm(input: image, layer: .conv2d(stride: 1, padding: 0), options: options) == nil)
    }

    @Test func veraOptionsThroughLibffi() throws {
        let (_, vera, _) = try Self.registryWithExamples()
        #expect(vera.functions.map(\.signature) == [
            "describe() -> const char *",
            "set_option(const char *, double) -> int32_t",
            "get_option(const char *) -> double",
        ])
        guard case .string(let text) = try vera.call(function: "describe") else {
            Issue.record("describe did not return a string"); return
        }
        #expect(text.contains("VeRA") && text.hasSuffix("fan_in_fan_out=0"))
        #expect(try vera.call(function: "set_option", arguments: [.string("fan_in_fan_out"), .double(1)]) == .int32(0))
        defer { _ = try? vera.call(function: "set_option", arguments: [.string("fan_in_fan_out"), .double(0)]) }
        #expect(try vera.call(function: "get_option", arguments: [.string("fan_in_fan_out")]) == .double(1))
        guard case .string(let after) = try vera.call(function: "describe") else { return }
        #expect(after.hasSuffix("fan_in_fan_out=1"))
        #expect(try vera.call(function: "set_option", arguments: [.string("no_such_option"), .double(1)]) == .int32(-1))
        #expect(try vera.call(function: "set_option", arguments: [.string("fan_in_fan_out"), .double(0.5)]) == .int32(-2))
        // With fan_in_fan_out the delta comes transposed ([in, out] weights, GPT-2's Conv1D).
        let adapter = try Self.registryWithExamples().0.load(try PluginTestSupport.fixture("vera/adapter_model.safetensors"))
        #expect(try vera.call(function: "set_option", arguments: [.string("fan_in_fan_out"), .double(0)]) == .int32(0))
        let normal = try Self.registryWithExamples().0.load(try PluginTestSupport.fixture("vera/adapter_model.safetensors"))
        let base = try PluginTestSupport.fixture("vera/base.safetensors")
        let index = try #require(normal.modules.firstIndex { $0.name.hasSuffix("ff.net.2") && $0.name.contains("down_blocks") })
        let w = try base.tensor(String(normal.modules[index].name.dropFirst("base_model.model.".count)) + ".weight")  // [8, 32]
        let d = try #require(try normal.modules[index].delta(weight: w, options: DeltaOptions(strength: 1)).weight)
        let wt = w.transposed().contiguous()
        let dt = try #require(try adapter.modules[index].delta(weight: wt, options: DeltaOptions(strength: 1)).weight)
        #expect(dt.shape == [32, 8])
        #expect(relativeMaxError(dt, d.transposed().contiguous()) == 0)
    }

    @Test func hraMatchesPEFTMergedWeights() throws {
        let (registry, _, hra) = try Self.registryWithExamples()
        #expect(try hra.call(function: "get_option", arguments: [.string("apply_GS")]) == .double(0))
        let adapter = try registry.load(try PluginTestSupport.fixture("hra/adapter_model.safetensors"))
        #expect(adapter.methodIDs == ["hra"])
        for module in adapter.modules {
            #expect(module.moduleType == "hra")
            #expect(module.rank == 4)
            #expect(module.dependsOnWeight)
        }
        // Linear (8×8, 8×32) and convolutions (3×3 and 1×1).
        #expect(try Self.expectMatchesPEFT(adapter, fixture: "hra") == 4)
    }

    @Test func hraGramSchmidtIsAnOptionSetThroughLibffi() throws {
        let (registry, _, hra) = try Self.registryWithExamples()
        let source = try PluginTestSupport.fixture("hra_gs/adapter_model.safetensors")
        // apply_GS is in adapter_config.json, not in the file: without the option the plugin
        // applies the plain chain, which is not what PEFT merged.
        let plain = try registry.load(source)
        let base = try PluginTestSupport.fixture("hra_gs/base.safetensors")
        let merged = try PluginTestSupport.fixture("hra_gs/merged.safetensors")
        let module = plain.modules[0]
        let key = String(module.name.dropFirst("base_model.model.".count)) + ".weight"
        let w = try base.tensor(key)
        let d = try #require(try module.delta(weight: w, options: DeltaOptions(strength: 1)).weight)
        #expect(relativeMaxError(adding(w, d), try merged.tensor(key)) > 1e-3)

        #expect(try hra.call(function: "set_option", arguments: [.string("apply_GS"), .double(1)]) == .int32(0))
        defer { _ = try? hra.call(function: "set_option", arguments: [.string("apply_GS"), .double(0)]) }
        guard case .string(let text) = try hra.call(function: "describe") else {
            Issue.record("describe did not return a string"); return
        }
        #expect(text.contains("HRA") && text.hasSuffix("apply_GS=1"))
        let gs = try registry.load(source)
        #expect(try Self.expectMatchesPEFT(gs, fixture: "hra_gs") == 4)
        // Adapters capture the option at load: the earlier one is unchanged.
        let again = try #require(try module.delta(weight: w, options: DeltaOptions(strength: 1)).weight)
        #expect(relativeMaxError(again, d) == 0)
    }

    /// The host's own path: PEFT module names resolve on a (tiny, diffusers-named) UNet, and
    /// the patch plan applies the plugins' deltas — W' equals PEFT's merge.
    @Test func patchPlanAppliesPluginAdaptersLikePEFT() throws {
        let (registry, _, _) = try Self.registryWithExamples()
        for fixture in ["vera", "hra"] {
            let base = try PluginTestSupport.fixture("\(fixture)/base.safetensors")
            let merged = try PluginTestSupport.fixture("\(fixture)/merged.safetensors")
            var tensors: [String: Tensor] = [:]
            for key in base.keys { tensors["unet." + key] = try base.tensor(key) }
            let model = ModelWeights(path: "tiny-unet", keys: base.keys.map { "unet." + $0 }, tensors: tensors,
                                     naming: .diffusers, family: .sd1)
            let adapter = try registry.load(try PluginTestSupport.fixture("\(fixture)/adapter_model.safetensors"))
            let plan = try PatchPlan(model: model, stack: [AdapterApplication(adapter: adapter)])
            #expect(plan.report.applied == adapter.modules.count, "\(fixture): \(plan.report.skipped)")
            #expect(plan.touchedKeys.count == base.keys.count)
            for key in base.keys {
                let patched = try #require(try plan.patchedTensor(for: "unet." + key))
                let error = relativeMaxError(patched, try merged.tensor(key))
                #expect(error <= 1e-5, "\(fixture): \(key) differs from PEFT's merge by \(error)")
            }
        }
    }

    @Test func hraRefusesAWeightOfAnotherWidth() throws {
        let (registry, _, _) = try Self.registryWithExamples()
        let adapter = try registry.load(try PluginTestSupport.fixture("hra/adapter_model.safetensors"))
        let module = try #require(adapter.modules.first { $0.name.hasSuffix("ff.net.2") })  // hra_u is [32, 4]
        #expect {
            _ = try module.delta(weight: Tensor(zeros: [8, 16]), options: DeltaOptions(strength: 1))
        } throws: { error in
            guard case let .pluginFailed(path, method, operation, moduleName, status, message) = error as? PluginError else { return false }
            return path.hasSuffix("/hra.so") && method == "hra" && operation == "delta" && moduleName == module.name
                && status == 1 && message.contains("hra_u has 32 rows")
        }
    }
}
