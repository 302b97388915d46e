import Foundation
import Host
import Hypernetwork
import Tensor
import Testing
@testable import Runtime

/// `hn.json`.
private struct HypernetworkConformanceFixture: Decodable {
    let strength: Float
    let second_strength: Float
    /// Context widths each file has a key/value pair for.
    let widths: [String: [Int]]
    /// Per run ("sd1.full", …): how many attention contexts each width's pairs transformed.
    let calls: [String: [String: Int]]

    static func load() throws -> HypernetworkConformanceFixture {
        try AdapterConformanceFixtures.json("hn.json", as: HypernetworkConformanceFixture.self)
    }
}

/// Passes calls through to a transform and counts, per width, those it answered.
private final class CountingContextTransform: ContextTransform {
    let inner: any ContextTransform
    private(set) var callsByWidth: [Int: Int] = [:]

    init(_ inner: any ContextTransform) { self.inner = inner }

    func transform(context x: Tensor, width: Int, strength: Float) throws -> (key: Tensor, value: Tensor)? {
        let result = try inner.transform(context: x, width: width, strength: strength)
        if result != nil { callsByWidth[width, default: 0] += 1 }
        return result
    }

    func transform(key: Tensor, value: Tensor, width: Int, strength: Float) throws -> (key: Tensor, value: Tensor)? {
        let result = try inner.transform(key: key, value: value, width: width, strength: strength)
        if result != nil { callsByWidth[width, default: 0] += 1 }
        return result
    }
}

/// Hypernetworks end to end: A1111 `.pt` files through the registry, their transforms through
/// `GenerationHooks(stack:)` into a UNet call on the tiny SD1/SDXL models, against diffusers'
/// UNet2DConditionModel whose every attention runs A1111's `apply_hypernetworks` on its context
/// (the text for cross-attention, the hidden states for self-attention) before to_k / to_v.
@Suite("Adapter conformance: hypernetworks on the UNet")
struct AdapterConformanceHypernetworkTests {
    /// A hypernetwork file of the fixtures, loaded as a user's would be (registry detection).
    static func hypernetwork(_ name: String) throws -> Adapter {
        let registry = AdapterRegistry()
        try registerHypernetwork(into: registry)
        let adapter = try registry.load(AdapterConformanceFixtures.source("\(name).pt"))
        #expect(adapter.methodIDs == ["hypernetwork"] && adapter.unclaimedKeys.isEmpty && adapter.contextTransforms.count == 1)
        return adapter
    }

    /// The hypernetwork stacks of the reference's runs (file, strength), in application order.
    fileprivate static func stack(_ run: String, _ fixture: HypernetworkConformanceFixture) -> [(String, Float)] {
        switch run {
        case "full": return [("hn_full", fixture.strength)]
        case "chain": return [("hn_full", fixture.strength), ("hn_second", fixture.second_strength)]
        case "cross": return [("hn_cross", fixture.strength)]
        case "mid": return [("hn_mid", fixture.strength)]
        case "xl": return [("hn_xl", fixture.strength)]
        default: fatalError("unknown run \(run)")
        }
    }

    /// The tiny UNet of `family` (diffusers folder).
    static func unet(_ family: String) throws -> UNet {
        try UNet(weights: NetworkFixtures.model(family), config: NetworkFixtures.tinyUNet)
    }

    /// The fixture's UNet call for `family` with `hooks`.
    static func call(_ unet: UNet, _ family: String, _ expected: [String: Tensor], hooks: GenerationHooks) throws -> Tensor {
        let added = try expected["\(family).text_embeds"].map {
            SDXLConditioning(textEmbeds: $0, timeIDs: try #require(expected["\(family).time_ids"]))
        }
        return try unet(try #require(expected["\(family).sample"]), timesteps: try #require(expected["\(family).timesteps"]).floats,
                        context: try #require(expected["\(family).context"]), added: added, hooks: hooks)
    }

    @Test("The plain call matches diffusers' AttnProcessor (the base the hypernetwork runs are compared on)",
          arguments: ["sd1", "sdxl"])
    func plain(_ family: String) throws {
        let expected = try AdapterConformanceFixtures.tensors("hn_expected.safetensors")
        let out = try Self.call(Self.unet(family), family, expected, hooks: .none)
        let error = NetworkFixtures.relativeError(out, try #require(expected["\(family).plain"]))
        #expect(error < 1e-4, "\(family) plain: relative error \(error)")
    }

    /// full: widths 4, 8, 32 (every attention); chain: full at 0.8 then second at 0.5, k and v
    /// chains kept apart; cross: 32 only; mid: 8 only (the 4-wide self-attentions and all
    /// cross-attentions untouched); xl: SDXL widths 8 and 48.
    @Test("UNet output with hypernetworks matches diffusers + A1111's apply_hypernetworks",
          arguments: ["sd1.full", "sd1.chain", "sd1.cross", "sd1.mid", "sdxl.xl"])
    func conformance(_ run: String) throws {
        let fixture = try HypernetworkConformanceFixture.load()
        let expected = try AdapterConformanceFixtures.tensors("hn_expected.safetensors")
        let (family, name) = (String(run.split(separator: ".")[0]), String(run.split(separator: ".")[1]))
        let stack = try Self.stack(name, fixture).map { file, strength in
            AdapterApplication(adapter: try Self.hypernetwork(file), weight: strength)
        }
        var hooks = GenerationHooks(stack: stack)
        #expect(hooks.contextTransforms.map(\.strength) == Self.stack(name, fixture).map(\.1))
        let counters = hooks.contextTransforms.map { CountingContextTransform($0.transform) }
        hooks.contextTransforms = zip(counters, hooks.contextTransforms).map { (transform: $0 as any ContextTransform, strength: $1.strength) }

        let unet = try Self.unet(family)
        let out = try Self.call(unet, family, expected, hooks: hooks)
        let want = try #require(expected[run]), plain = try #require(expected["\(family).plain"])
        let error = NetworkFixtures.relativeError(out, want)
        #expect(error < 1e-4, "\(run): relative error \(error)")
        #expect(NetworkFixtures.relativeError(want, plain) > 1e-2, "\(run): the hypernetworks must change the output")
        print("hypernetwork conformance \(run): relative error \(error)")

        // The same attentions were hooked as in the reference: every attention asks each
        // transform once (the first one sees the shared context; later ones may be asked per
        // branch, so only the first one's count is implementation-independent).
        let reference = try #require(fixture.calls[run])
        if counters.count == 1 {
            let mine = Dictionary(uniqueKeysWithValues: counters[0].callsByWidth.map { (String($0.key), $0.value) })
            #expect(mine == reference, "\(run): transformed contexts per width \(mine), reference \(reference)")
        } else {
            let firstWidths = try #require(fixture.widths[Self.stack(name, fixture)[0].0])
            let mine = counters[0].callsByWidth
            for width in firstWidths {
                // The reference counts both hypernetworks; the first one answers every attention of its widths.
                #expect(mine[width] != nil, "\(run): width \(width) never reached the first hypernetwork")
            }
            #expect(Set(mine.keys) == Set(firstWidths))
        }
    }

    @Test("Strength 0 gives exactly the plain UNet call", arguments: ["sd1", "sdxl"])
    func strengthZero(_ family: String) throws {
        let expected = try AdapterConformanceFixtures.tensors("hn_expected.safetensors")
        let unet = try Self.unet(family)
        let plain = try Self.call(unet, family, expected, hooks: .none)
        let file = family == "sd1" ? "hn_full" : "hn_xl"
        let zero = try Self.call(unet, family, expected, hooks: GenerationHooks(stack: [
            AdapterApplication(adapter: try Self.hypernetwork(file), weight: 0),
        ]))
        // x + MLP(x)·0 = x exactly, so k and v read the very same context.
        #expect(zero.floats == plain.floats)
        let on = try Self.call(unet, family, expected, hooks: GenerationHooks(stack: [
            AdapterApplication(adapter: try Self.hypernetwork(file), weight: 0.8),
        ]))
        #expect(NetworkFixtures.relativeError(on, plain) > 1e-2)
    }

    /// Every attention of the SD1 UNet on random inputs: a hypernetwork without a pair for the
    /// attention's context width leaves its output bit-identical; one with a pair changes it.
    @Test("A hypernetwork with only some widths leaves the other attentions untouched",
          arguments: ["hn_cross", "hn_mid"])
    func otherWidthsUntouched(_ file: String) throws {
        let fixture = try HypernetworkConformanceFixture.load()
        let widths = Set(try #require(fixture.widths[file]))
        let hooks = GenerationHooks(stack: [AdapterApplication(adapter: try Self.hypernetwork(file), weight: 0.8)])
        let unet = try Self.unet("sd1")
        let transformers = unet.downBlocks.flatMap(\.attentions) + unet.midBlock.attentions + unet.upBlocks.flatMap(\.attentions)
        let attentions = transformers.flatMap(\.blocks).flatMap { block in
            [(block.selfAttention, false)] + (block.crossAttention.map { [($0, true)] } ?? [])
        }
        var touched = 0, untouched = 0
        for (index, (attention, isCross)) in attentions.enumerated() {
            let width = attention.query.inFeatures, contextWidth = attention.key.inFeatures
            let x = NetworkFixtures.random([1, 5, width], seed: UInt64(300 + index))
            let context = isCross ? NetworkFixtures.random([1, 7, contextWidth], seed: UInt64(400 + index)) : nil
            let plain = try attention(x, context: context, workspace: Workspace())
            let hooked = try attention(x, context: context, hooks: hooks, workspace: Workspace())
            if widths.contains(contextWidth) {
                touched += 1
                #expect(NetworkFixtures.relativeError(hooked, plain) > 1e-3, "attention \(index) (context width \(contextWidth)) must change")
            } else {
                untouched += 1
                #expect(hooked.floats == plain.floats, "attention \(index) (context width \(contextWidth)) must be untouched")
            }
        }
        // SD1 tiny: 16 self-attentions (10 of width 4, 6 of width 8) and 16 cross-attentions (32).
        #expect(touched + untouched == 32)
        #expect(touched == (file == "hn_cross" ? 16 : 6))
    }
}
