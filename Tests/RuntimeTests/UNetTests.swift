import Foundation
import Host
import Testing
import Tensor
@testable import Runtime

/// A weight-independent test adapter module: a fixed delta for one target; optionally a
/// forward term for linear layers (as LoRA has), else the host's dense bypass path.
final class TestDeltaModule: LinearAdapterModule {
    let name: String
    let moduleType = "test"
    let delta: Tensor
    let useForwardTerm: Bool

    init(name: String, delta: Tensor, useForwardTerm: Bool) {
        self.name = name
        self.delta = delta
        self.useForwardTerm = useForwardTerm
    }

    func unitDelta(dynRank: Int?) throws -> ModuleDelta { ModuleDelta(weight: delta) }

    func forwardTerm(input x: Tensor, layer: LayerKind, options: DeltaOptions) throws -> Tensor? {
        guard useForwardTerm, case .linear = layer, delta.rank == 2 else { return nil }
        return x.matmul(delta.transposed()).scaled(by: Double(options.strength))
    }
}

/// A hypernetwork-like context transform for one width: k = x + s·(x·A), v = x + s·(x·B).
final class TestContextTransform: ContextTransform {
    let width: Int
    let a: Tensor, b: Tensor
    private(set) var calls = 0

    init(width: Int, seed: UInt64) {
        self.width = width
        a = NetworkFixtures.random([width, width], seed: seed, scale: 0.3)
        b = NetworkFixtures.random([width, width], seed: seed + 1, scale: 0.3)
    }

    func transform(context x: Tensor, width: Int, strength: Float) throws -> (key: Tensor, value: Tensor)? {
        guard width == self.width else { return nil }
        calls += 1
        return (x + x.matmul(a).scaled(by: Double(strength)), x + x.matmul(b).scaled(by: Double(strength)))
    }

    /// The transform by hand (F64 loops) on rows of `x` [rows, width].
    func reference(_ x: [Float], strength: Float, key: Bool) -> [Float] {
        let m = (key ? a : b).floats
        var out = x
        let rows = x.count / width
        for r in 0..<rows {
            for j in 0..<width {
                var s = 0.0
                for i in 0..<width { s += Double(x[r * width + i]) * Double(m[i * width + j]) }
                out[r * width + j] = Float(Double(x[r * width + j]) + Double(strength) * s)
            }
        }
        return out
    }
}

/// An identity context transform (answers every width with the context itself).
final class IdentityContextTransform: ContextTransform {
    func transform(context x: Tensor, width: Int, strength: Float) throws -> (key: Tensor, value: Tensor)? { (x, x) }
}

@Suite("UNet")
struct UNetTests {
    /// Runs the fixture's call on `model` and returns (ours, diffusers').
    private func run(_ unet: UNet, fixture: String, hooks: GenerationHooks = .none) throws -> (Tensor, Tensor) {
        let f = try NetworkFixtures.tensors("unet/\(fixture).safetensors")
        let added = try f["text_embeds"].map { SDXLConditioning(textEmbeds: $0, timeIDs: try #require(f["time_ids"])) }
        let out = try unet(try #require(f["sample"]), timesteps: try #require(f["timesteps"]).floats,
                           context: try #require(f["context"]), added: added, hooks: hooks)
        return (out, try #require(f["output"]))
    }

    @Test("Matches diffusers on the tiny SD1/SD2/SDXL models (diffusers folders and single files)",
          arguments: ["sd1", "sd1.safetensors", "sd2", "sd2.safetensors", "sdxl", "sdxl.safetensors"])
    func conformance(model name: String) throws {
        let model = try NetworkFixtures.model(name)
        let unet = try UNet(weights: model, config: NetworkFixtures.tinyUNet)
        let (ours, reference) = try run(unet, fixture: String(name.prefix { $0 != "." }))
        #expect(ours.shape == reference.shape)
        let error = NetworkFixtures.relativeError(ours, reference)
        #expect(error < 1e-4, "\(name): relative error \(error)")
    }

    @Test("Structure comes from the weights")
    func structure() throws {
        let sd1 = try UNet(weights: NetworkFixtures.model("sd1.safetensors"), config: NetworkFixtures.tinyUNet)
        #expect(sd1.levels == 4 && sd1.inChannels == 4 && sd1.outChannels == 4 && sd1.contextWidth == 32)
        #expect(sd1.pooledWidth == nil)
        #expect(sd1.downBlocks.map(\.attentions.count) == [2, 2, 2, 0])
        #expect(sd1.upBlocks.map(\.resnets.count) == [3, 3, 3, 3])
        #expect(sd1.downBlocks[0].attentions[0].projectIn.layerKind == .conv2d(stride: 1, padding: 0))
        let sdxl = try UNet(weights: NetworkFixtures.model("sdxl"), config: NetworkFixtures.tinyUNet)
        #expect(sdxl.levels == 3 && sdxl.contextWidth == 48 && sdxl.pooledWidth == 16)
        #expect(sdxl.downBlocks.map { $0.attentions.first?.blocks.count ?? 0 } == [0, 2, 2])
        #expect(sdxl.downBlocks[1].attentions[0].projectIn.layerKind == .linear)
        let inpaint = try UNet(weights: NetworkFixtures.model("sd1_inpaint.safetensors"), config: NetworkFixtures.tinyUNet)
        #expect(inpaint.inChannels == 9)
    }

    @Test("Head-count rules follow diffusers: counts per level, or a head width")
    func headRules() {
        let sd1 = UNetConfig.standard(for: .sd1), sd2 = UNetConfig.standard(for: .sd2)
        #expect([320, 640, 1280].enumerated().map { sd1.heads(level: $0.offset, channels: $0.element) } == [8, 8, 8])
        #expect([320, 640, 1280, 1280].enumerated().map { sd2.heads(level: $0.offset, channels: $0.element) } == [5, 10, 20, 20])
        let perLevel = UNetConfig(attentionHeads: .count([5, 10, 20, 20]))
        #expect(perLevel.heads(level: 2, channels: 1280) == 20 && perLevel.heads(level: 0, channels: 320) == 5)
    }

    @Test("Reads a diffusers config.json (attention_head_dim is a head count)")
    func diffusersConfig() throws {
        let data = try Data(contentsOf: NetworkFixtures.models.appendingPathComponent("sdxl/unet/config.json"))
        let config = try UNetConfig(diffusersConfig: data)
        #expect(config.attentionHeads == .count([2]) && config.normGroups == 4 && config.additionTimeEmbedDimension == 8)
        #expect(config.sampleSize == 8)
    }

    @Test("Inputs that do not fit are refused with the reason")
    func badInputs() throws {
        let sdxl = try UNet(weights: NetworkFixtures.model("sdxl"), config: NetworkFixtures.tinyUNet)
        let sample = NetworkFixtures.random([1, 4, 8, 8], seed: 1), context = NetworkFixtures.random([1, 3, 48], seed: 2)
        #expect(throws: UNetError.self) { try sdxl(sample, timestep: 10, context: context) }
        #expect(throws: UNetError.self) { try sdxl(sample, timestep: 10, context: NetworkFixtures.random([1, 3, 32], seed: 3)) }
        #expect(throws: UNetError.self) { try sdxl(NetworkFixtures.random([1, 3, 8, 8], seed: 4), timestep: 1, context: context) }
        #expect(throws: WeightLoaderError.self) {
            try UNet(weights: NetworkFixtures.memoryModel([("vae.decoder.conv_in.weight", Tensor(zeros: [1, 1, 1, 1]))]))
        }
    }

    /// Every UNet linear and conv layer of `model` gets a test module (linear ones alternate
    /// between a forward term and the dense path).
    static func everyLayerAdapter(_ model: ModelWeights, part: ModelPart = .unet) -> Adapter {
        var modules: [any AdapterModule] = []
        for (i, target) in model.targetIndex.allTargets.enumerated() where target.part == part && target.rows == nil {
            switch target.layer {
            case .linear, .conv2d:
                let shape = model.tensor(target.weightKey)!.shape
                // Linear deltas given as [out, in] even for 1×1-conv storage: the host fits them.
                let deltaShape = shape.count == 4 && shape[2] == 1 && shape[3] == 1 && i % 2 == 0 ? [shape[0], shape[1]] : shape
                let delta = NetworkFixtures.random(deltaShape, seed: UInt64(1000 + i), scale: 0.15)
                modules.append(TestDeltaModule(name: String(target.weightKey.dropLast(".weight".count)), delta: delta,
                                               useForwardTerm: i % 3 != 0))
            default:
                continue
            }
        }
        return Adapter(path: "<test adapter>", methodIDs: ["test"], format: "test", baseModel: model.family,
                       metadata: [:], modules: modules)
    }

    @Test("Bypass mode equals the merged weights; merged patches are seen by the next call",
          arguments: ["sd1.safetensors", "sd2", "sdxl.safetensors"])
    func bypassEqualsMerged(model name: String) throws {
        let model = NetworkFixtures.widened(try NetworkFixtures.model(name))
        let unet = try UNet(weights: model, config: NetworkFixtures.tinyUNet)
        let fixture = String(name.prefix { $0 != "." })
        let (base, _) = try run(unet, fixture: fixture)

        let adapter = Self.everyLayerAdapter(model)
        let plan = try PatchPlan(model: model, stack: [AdapterApplication(adapter: adapter, weight: 0.7)])
        #expect(plan.report.applied == adapter.modules.count && plan.report.skipped.isEmpty)
        let (bypassed, _) = try run(unet, fixture: fixture, hooks: GenerationHooks(bypass: BypassPatch(plan: plan)))

        let engine = PatchEngine(model: model)
        try engine.apply(plan)
        let (merged, _) = try run(unet, fixture: fixture)
        engine.restore()
        let (restored, _) = try run(unet, fixture: fixture)

        let change = NetworkFixtures.relativeError(merged, base)
        #expect(change > 1e-2, "the adapter must change the output (changed \(change))")
        let error = NetworkFixtures.relativeError(bypassed, merged)
        #expect(error < 1e-5, "\(name): bypass vs merged \(error)")
        #expect(restored.floats == base.floats)
    }

    /// The sd1 model's first cross-attention (2 heads over 4 channels, context width 32).
    private func firstAttention(_ name: String) throws -> Attention {
        let loader = WeightLoader(model: try NetworkFixtures.model("sd1"), component: .unet)
            .child("down_blocks.0.attentions.0.transformer_blocks.0.\(name)")
        return try Attention(diffusers: loader, heads: 2)
    }

    /// Attention output by hand: projections, naive attention, output projection.
    private func attentionByHand(_ attention: Attention, x: Tensor, keyInput: [Float], valueInput: [Float],
                                 contextRows: Int) throws -> [Float] {
        let (b, n, c) = (x.shape[0], x.shape[1], x.shape[2])
        let width = attention.key.inFeatures, inner = attention.query.outFeatures
        let q = Naive.linear(x.floats, rows: b * n, try attention.query.weight.current().floats, out: inner, inWidth: c, bias: nil)
        let k = Naive.linear(keyInput, rows: b * contextRows, try attention.key.weight.current().floats, out: inner, inWidth: width, bias: nil)
        let v = Naive.linear(valueInput, rows: b * contextRows, try attention.value.weight.current().floats, out: inner, inWidth: width, bias: nil)
        let attended = Naive.attention(q: q, k: k, v: v, batch: b, queries: n, keys: contextRows, heads: attention.heads,
                                       headDim: attention.headDim, valueDim: attention.headDim)
        let output = try #require(attention.output)
        return Naive.linear(attended, rows: b * n, try output.weight.current().floats, out: c, inWidth: inner,
                            bias: try output.bias?.floats())
    }

    @Test("Context transforms: keys and values read the chained transforms, queries do not")
    func contextTransformsByHand() throws {
        let attention = try firstAttention("attn2")
        #expect(attention.key.weight.diffusersKey.hasSuffix("attn2.to_k.weight") && attention.key.bias == nil)
        let x = NetworkFixtures.random([2, 6, 4], seed: 200), context = NetworkFixtures.random([2, 5, 32], seed: 201)
        let t1 = TestContextTransform(width: 32, seed: 202), t2 = TestContextTransform(width: 32, seed: 204)
        let absent = TestContextTransform(width: 77, seed: 206)
        let hooks = GenerationHooks(contextTransforms: [(t1, 0.8), (absent, 1), (t2, 0.5)])
        let ours = try attention(x, context: context, hooks: hooks, workspace: Workspace())

        let k1 = t1.reference(context.floats, strength: 0.8, key: true), v1 = t1.reference(context.floats, strength: 0.8, key: false)
        let k2 = t2.reference(k1, strength: 0.5, key: true), v2 = t2.reference(v1, strength: 0.5, key: false)
        let expected = try attentionByHand(attention, x: x, keyInput: k2, valueInput: v2, contextRows: 5)
        #expect(relativeError(ours.floats, expected) < 1e-5)
        #expect(absent.calls == 0)

        // Without transforms the same module gives the plain attention.
        let plain = try attention(x, context: context, workspace: Workspace())
        let expectedPlain = try attentionByHand(attention, x: x, keyInput: context.floats, valueInput: context.floats, contextRows: 5)
        #expect(relativeError(plain.floats, expectedPlain) < 1e-5)
        #expect(relativeError(plain.floats, expected) > 1e-3)
    }

    @Test("Self-attention passes x through transforms of its width (A1111 hooks every attention)")
    func selfAttentionTransform() throws {
        let attention = try firstAttention("attn1")
        let x = NetworkFixtures.random([2, 6, 4], seed: 210)
        let t = TestContextTransform(width: 4, seed: 211)
        let ours = try attention(x, hooks: GenerationHooks(contextTransforms: [(t, 1.5)]), workspace: Workspace())
        let expected = try attentionByHand(attention, x: x, keyInput: t.reference(x.floats, strength: 1.5, key: true),
                                           valueInput: t.reference(x.floats, strength: 1.5, key: false), contextRows: 6)
        #expect(relativeError(ours.floats, expected) < 1e-5)
    }

    @Test("A UNet call with context transforms: identity changes nothing, a real one changes the output")
    func unetContextTransforms() throws {
        let unet = try UNet(weights: NetworkFixtures.model("sd1"), config: NetworkFixtures.tinyUNet)
        let (base, _) = try run(unet, fixture: "sd1")
        let (identity, _) = try run(unet, fixture: "sd1",
                                    hooks: GenerationHooks(contextTransforms: [(IdentityContextTransform(), 1)]))
        #expect(identity.floats == base.floats)
        let t = TestContextTransform(width: 32, seed: 220)
        let (changed, _) = try run(unet, fixture: "sd1", hooks: GenerationHooks(contextTransforms: [(t, 1)]))
        #expect(NetworkFixtures.relativeError(changed, base) > 1e-3)
        // One call per cross-attention (3 down levels × 2 + mid + 3 up levels × 3 = 16; k and v share it).
        #expect(t.calls == 16)
    }
}
