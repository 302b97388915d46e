import Foundation
import Host
import LoRA
import SafeTensors
import Tensor
import Testing

/// `PatchEngine`: in-place apply of a stack and bit-exact restore from the originals, with a
/// backup of only the touched tensors.
@Suite struct PatchEngineRestoreTests {
    /// A stack of several peer-made adapters on SD1: kohya LoCon (TE 0.7), LoHa, DoRA (weight-
    /// dependent), PEFT and LyCORIS full (which also changes biases).
    static func stack() throws -> [AdapterApplication] {
        [
            AdapterApplication(adapter: try PatchFixtures.adapter("kohya_sd1_locon"), weight: 0.7, unetWeight: 1),
            AdapterApplication(adapter: try PatchFixtures.adapter("lycoris_loha"), weight: 0.5),
            AdapterApplication(adapter: try PatchFixtures.adapter("lycoris_dora_out"), weight: 1),
            AdapterApplication(adapter: try PatchFixtures.adapter("peft_sd1_patterns"), weight: 0.8),
            AdapterApplication(adapter: try PatchFixtures.adapter("lycoris_full"), weight: 1, unetWeight: 0.9),
        ]
    }

    /// "F16": the fixture as stored (F16 tensors mapping the file); "F32": owned F32 copies.
    @Test(arguments: ["F16", "F32"])
    func applyThenRestoreIsBitExact(_ precision: String) throws {
        let stored = try PatchFixtures.model("sd1")
        let model = precision == "F16" ? stored : PatchFixtures.widened(stored)
        let weightKey = "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"
        #expect(model.tensor(weightKey)?.dtype == (precision == "F16" ? .f16 : .f32))
        let originals = Dictionary(uniqueKeysWithValues: model.keys.map { ($0, model.tensor($0)!) })
        let originalBytes = Dictionary(uniqueKeysWithValues: model.keys.map { ($0, patchBytes(model.tensor($0)!)) })

        let plan = try PatchPlan(model: model, stack: try Self.stack())
        #expect(plan.report.skipped.isEmpty, "\(plan.report.skipped.prefix(3))")
        let touched = plan.touchedKeys
        // Biases too (lycoris_full's diff_b), so the backup is not weights only.
        #expect(touched.contains { $0.hasSuffix(".bias") })
        #expect(touched.count > 30 && touched.count < model.keys.count / 4)

        let engine = PatchEngine(model: model)
        var progressCalls: [(Int, Int)] = []
        try engine.apply(plan) { progressCalls.append(($0, $1)) }
        #expect(progressCalls.count == touched.count && progressCalls.last?.0 == touched.count)

        // The backup holds exactly the touched tensors, in model order.
        #expect(engine.patchedKeys == touched)
        #expect(engine.patchedKeys == model.keys.filter(Set(touched).contains))
        let changed = model.keys.filter { patchBytes(model.tensor($0)!) != originalBytes[$0]! }
        #expect(Set(changed).isSubset(of: Set(touched)))
        #expect(changed.count == touched.count, "touched but unchanged: \(Set(touched).subtracting(changed).sorted().prefix(3))")
        for key in model.keys {
            let now = model.tensor(key)!, before = originals[key]!
            #expect(now.dtype == before.dtype && now.shape == before.shape, "\(key)")
            if touched.contains(key) {
                // A new tensor is swapped in; the original's storage is never written.
                #expect(now.storage !== before.storage, "\(key)")
                #expect(patchBytes(before) == originalBytes[key]!, "\(key): original storage was written")
            } else {
                // Untouched tensors are the very same storage objects (no copy, no backup).
                #expect(now.storage === before.storage && now.offset == before.offset, "\(key)")
            }
        }
        if precision == "F16" {
            #expect(originals[touched[0]]!.storage.isMapped)
        }

        // A second plan on top: the backup keeps the first originals.
        let second = try PatchPlan(model: model, stack: [
            AdapterApplication(adapter: try PatchFixtures.adapter("lycoris_oft"), weight: 1)])
        try engine.apply(second)
        let union = Set(touched).union(second.touchedKeys)
        #expect(engine.patchedKeys == model.keys.filter(union.contains))
        #expect(union.count > touched.count || Set(second.touchedKeys).isSubset(of: Set(touched)))

        engine.restore()
        #expect(engine.patchedKeys.isEmpty)
        for key in model.keys {
            let now = model.tensor(key)!
            #expect(patchBytes(now) == originalBytes[key]!, "\(key) not restored bit for bit")
            #expect(now.storage === originals[key]!.storage, "\(key): restore must put the original back")
        }
    }

    /// A module failing while the plan is computed leaves the model as it was: nothing is
    /// swapped in, nothing is backed up; the error names the adapter and the module.
    @Test func failureLeavesTheModelWhole() throws {
        let model = PatchFixtures.widened(try PatchFixtures.model("sd1"))
        let originals = model.keys.map { model.tensor($0)!.storage }
        // The last UNet layer the LoCon touches, so tensors before it were computed already.
        let failing = PatchFailingModule(name: "lora_unet_up_blocks_1_upsamplers_0_conv")
        let broken = Adapter(path: "broken.safetensors", methodIDs: ["test"], format: "test", baseModel: nil,
                             metadata: [:], modules: [failing])
        let plan = try PatchPlan(model: model, stack: [
            AdapterApplication(adapter: try PatchFixtures.adapter("kohya_sd1_locon")),
            AdapterApplication(adapter: broken)])
        #expect(plan.report.summary == "20 of 20 modules applied")
        let engine = PatchEngine(model: model)
        do {
            try engine.apply(plan)
            Issue.record("apply must throw")
        } catch let error as PatchError {
            guard case let .moduleFailed(adapter, module, reason) = error else {
                Issue.record("unexpected \(error)")
                return
            }
            #expect(adapter == "broken.safetensors" && module == failing.name && reason.contains("test failure"))
        }
        #expect(engine.patchedKeys.isEmpty)
        for (key, storage) in zip(model.keys, originals) {
            #expect(model.tensor(key)!.storage === storage, "\(key)")
        }
    }
}

/// A module that fails when its delta is computed.
final class PatchFailingModule: AdapterModule {
    struct Failure: Error, CustomStringConvertible { var description: String { "test failure" } }
    let name: String
    var moduleType: String { "test-failing" }
    init(name: String) { self.name = name }
    func delta(weight: Tensor, options: DeltaOptions) throws -> ModuleDelta { throw Failure() }
}
