import Foundation
import Host
import SafeTensors
import Testing
import Tensor
@testable import Runtime

/// Fixtures and references shared by the UNet, VAE and layer tests.
enum NetworkFixtures {
    /// The tiny SD models of Tests/HostTests/Fixtures/models (tools/gen_model_fixtures.py).
    /// They belong to the HostTests target's resources, which another test bundle cannot
    /// reach, so they are found next to this source file (tests always run from a checkout).
    static let models = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("HostTests/Fixtures/models")

    /// A tiny model: `name` (a diffusers folder, e.g. "sd1") or `name.safetensors` (single file).
    static func model(_ name: String) throws -> ModelWeights {
        try ModelWeights.load(path: models.appendingPathComponent(name).path)
    }

    /// The tiny models' UNet settings: 2 heads per attention, 4 GroupNorm groups, 8-wide SDXL time ids.
    static let tinyUNet = UNetConfig(attentionHeads: .count([2]), normGroups: 4, additionTimeEmbedDimension: 8)
    /// The tiny VAE's settings.
    static let tinyVAE = VAEConfig(scalingFactor: 0.18215, normGroups: 4)

    /// Tensors of `Fixtures/<path>` (tools/gen_unet_vae_fixtures.py), as F32.
    static func tensors(_ path: String) throws -> [String: Tensor] {
        let base = try #require(Bundle.module.url(forResource: "Fixtures", withExtension: nil))
        let file = try SafeTensorsFile(path: base.appendingPathComponent(path).path)
        var result: [String: Tensor] = [:]
        for name in file.names { result[name] = try file.tensor(named: name).to(.f32) }
        return result
    }

    /// The same model with every floating tensor widened to F32 in memory (so merged patches
    /// keep full precision).
    static func widened(_ model: ModelWeights) -> ModelWeights {
        var tensors: [String: Tensor] = [:]
        for key in model.keys {
            guard let t = model.tensor(key) else { continue }
            tensors[key] = t.dtype.isFloatingPoint ? t.to(.f32).copy() : t
        }
        return ModelWeights(path: model.path, keys: model.keys, tensors: tensors, naming: model.naming, family: model.family)
    }

    /// A diffusers-named in-memory model holding `tensors` (keys as given).
    static func memoryModel(_ tensors: [(String, Tensor)], family: ModelFamily = .sd1) -> ModelWeights {
        ModelWeights(path: "<test>", keys: tensors.map(\.0), tensors: Dictionary(uniqueKeysWithValues: tensors),
                     naming: .diffusers, family: family)
    }

    /// max |a − b| / max |b| (b: the reference).
    static func relativeError(_ a: Tensor, _ b: Tensor) -> Double {
        precondition(a.shape == b.shape, "shapes \(a.shape) vs \(b.shape)")
        let x = a.doubles, y = b.doubles
        var diff = 0.0, scale = 0.0
        for i in 0..<x.count {
            diff = max(diff, abs(x[i] - y[i]))
            scale = max(scale, abs(y[i]))
        }
        return diff / max(scale, 1e-30)
    }

    /// Deterministic pseudo-random values in [-scale, scale) (SplitMix64).
    static func random(_ shape: [Int], seed: UInt64, scale: Float = 1) -> Tensor {
        var state = seed &* 0x9E37_79B9_7F4A_7C15 &+ 1
        let n = shape.reduce(1, *)
        var values = [Float](repeating: 0, count: n)
        for i in 0..<n {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            z ^= z >> 31
            values[i] = (Float(z >> 40) / Float(1 << 24) * 2 - 1) * scale
        }
        return Tensor(shape: shape, values: values)
    }
}

/// Naive references (plain loops in F64), independent of the runtime's kernels.
enum Naive {
    /// y[r, o] = Σ_i x[r, i]·w[o, i] + b[o].
    static func linear(_ x: [Float], rows: Int, _ w: [Float], out: Int, inWidth: Int, bias: [Float]?) -> [Float] {
        var y = [Float](repeating: 0, count: rows * out)
        for r in 0..<rows {
            for o in 0..<out {
                var s = Double(bias?[o] ?? 0)
                for i in 0..<inWidth { s += Double(x[r * inWidth + i]) * Double(w[o * inWidth + i]) }
                y[r * out + o] = Float(s)
            }
        }
        return y
    }

    /// Cross-correlation of NCHW `x` with OIHW `w`, explicit padding per side, zero padding.
    static func conv(_ x: [Float], batch: Int, channels: Int, height: Int, width: Int, _ w: [Float], out: Int,
                     kernel: (Int, Int), bias: [Float]?, stride: Int, top: Int, left: Int, outH: Int, outW: Int) -> [Float] {
        var y = [Float](repeating: 0, count: batch * out * outH * outW)
        let (kh, kw) = kernel
        for b in 0..<batch {
            for o in 0..<out {
                for oh in 0..<outH {
                    for ow in 0..<outW {
                        var s = Double(bias?[o] ?? 0)
                        for c in 0..<channels {
                            for i in 0..<kh {
                                for j in 0..<kw {
                                    let ih = oh * stride - top + i, iw = ow * stride - left + j
                                    if ih < 0 || ih >= height || iw < 0 || iw >= width { continue }
                                    s += Double(x[((b * channels + c) * height + ih) * width + iw])
                                        * Double(w[((o * channels + c) * kh + i) * kw + j])
                                }
                            }
                        }
                        y[((b * out + o) * outH + oh) * outW + ow] = Float(s)
                    }
                }
            }
        }
        return y
    }

    /// softmax(q·kᵀ·scale)·v per (image, head); q [B, N, H·d], k [B, M, H·d], v [B, M, H·dv].
    static func attention(q: [Float], k: [Float], v: [Float], batch: Int, queries: Int, keys: Int, heads: Int,
                          headDim: Int, valueDim: Int, causal: Bool = false) -> [Float] {
        var out = [Float](repeating: 0, count: batch * queries * heads * valueDim)
        let scale = 1 / Double(headDim).squareRoot()
        for b in 0..<batch {
            for h in 0..<heads {
                for i in 0..<queries {
                    var scores = [Double](repeating: -.infinity, count: keys)
                    for j in 0..<keys where !(causal && j > i) {
                        var s = 0.0
                        for t in 0..<headDim {
                            s += Double(q[(b * queries + i) * heads * headDim + h * headDim + t])
                                * Double(k[(b * keys + j) * heads * headDim + h * headDim + t])
                        }
                        scores[j] = s * scale
                    }
                    let top = scores.max()!
                    let e = scores.map { $0 == -.infinity ? 0 : Foundation.exp($0 - top) }
                    let total = e.reduce(0, +)
                    for t in 0..<valueDim {
                        var s = 0.0
                        for j in 0..<keys { s += e[j] / total * Double(v[(b * keys + j) * heads * valueDim + h * valueDim + t]) }
                        out[(b * queries + i) * heads * valueDim + h * valueDim + t] = Float(s)
                    }
                }
            }
        }
        return out
    }

    static func gelu(_ x: Float) -> Float { Float(0.5 * Double(x) * (1 + erf(Double(x) / 2.0.squareRoot()))) }
    static func silu(_ x: Float) -> Float { Float(Double(x) / (1 + Foundation.exp(-Double(x)))) }
}

/// max |a − b| / max(max |b|, tiny).
func relativeError(_ a: [Float], _ b: [Float]) -> Double {
    precondition(a.count == b.count, "\(a.count) vs \(b.count) values")
    var diff = 0.0, scale = 0.0
    for i in 0..<a.count {
        diff = max(diff, abs(Double(a[i]) - Double(b[i])))
        scale = max(scale, abs(Double(b[i])))
    }
    return diff / max(scale, 1e-30)
}
