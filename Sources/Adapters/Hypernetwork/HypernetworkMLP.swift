import Host
import Tensor

/// One of a hypernetwork's MLPs (A1111's `HypernetworkModule`): `x + linear(x) · multiplier`,
/// `linear` being a `torch.nn.Sequential` built from the options — for each step i of
/// `layer_structure`:
///
/// 1. `Linear(width·ls[i] → width·ls[i+1])` (sizes truncated to integers as Python's `int`);
/// 2. the activation, except "linear"/None, and not after the last Linear unless
///    `activate_output`;
/// 3. `LayerNorm(width·ls[i+1])` (eps 1e-5) when `is_layer_norm`;
/// 4. `Dropout` when `dropout_structure[i+1] > 0` (no-op at inference, but it takes an index).
///
/// The state-dict keys are `linear.<index in the Sequential>.weight|bias`; old files' `linear1`
/// and `linear2` are `linear.0` and `linear.1` (A1111's `fix_old_state_dict`). Loading is
/// strict, as A1111's `load_state_dict`: every parameter present with its shape, nothing else.
final class HypernetworkMLP {
    enum Layer {
        /// y = x·Wᵀ + b; `weightT` is Wᵀ ([in, out]) so the product reads rows.
        case linear(weightT: Tensor, bias: Tensor)
        case activation(Activation)
        case layerNorm(weight: [Float], bias: [Float])
    }

    let width: Int
    let layers: [Layer]

    /// The MLP for context width `width` from `tensors` (keys relative to the module:
    /// `linear.N.weight`, …), checked against what `options` build.
    init(width: Int, options: HypernetworkOptions, tensors: [String: Tensor], file: String, keyPrefix: String) throws {
        self.width = width
        var remaining = Self.renamingLegacyKeys(tensors)
        func take(_ key: String, shape: [Int]) throws -> Tensor {
            guard let t = remaining.removeValue(forKey: key) else {
                throw HypernetworkError(file: file, key: keyPrefix + key, rule: .missingTensor)
            }
            guard t.shape == shape, t.dtype.isFloatingPoint else {
                throw HypernetworkError(file: file, key: keyPrefix + key, rule: .badShape(shape: t.shape, expected: shape))
            }
            return t.to(.f32)
        }

        let structure = options.layerStructure
        // Python's int(dim * multiplier): truncation toward zero.
        let sizes = structure.map { Int((Double(width) * $0).rounded(.towardZero)) }
        let activationName = options.activation
        if let name = activationName, Activation.addsModule(name), Activation.named(name) == nil {
            throw HypernetworkError(file: file, key: "activation_func", rule: .unsupportedActivation(name))
        }
        var layers: [Layer] = []
        var index = 0
        for i in 0..<(structure.count - 1) {
            let weight = try take("linear.\(index).weight", shape: [sizes[i + 1], sizes[i]])
            let bias = try take("linear.\(index).bias", shape: [sizes[i + 1]])
            layers.append(.linear(weightT: weight.transposed().contiguous(), bias: bias.contiguous()))
            index += 1
            let isLast = i >= structure.count - 2
            if let name = activationName, Activation.addsModule(name), !isLast || options.activateOutput {
                var slope: Float = 0.25
                if Activation.hasParameter(name) { slope = try take("linear.\(index).weight", shape: [1]).floats[0] }
                layers.append(.activation(Activation.named(name, preluSlope: slope)!))
                index += 1
            }
            if options.layerNorm {
                let w = try take("linear.\(index).weight", shape: [sizes[i + 1]])
                let b = try take("linear.\(index).bias", shape: [sizes[i + 1]])
                layers.append(.layerNorm(weight: w.floats, bias: b.floats))
                index += 1
            }
            if i + 1 < options.dropoutStructure.count, options.dropoutStructure[i + 1] > 0 { index += 1 }
        }
        if let extra = remaining.keys.sorted().first {
            throw HypernetworkError(file: file, key: keyPrefix + extra, rule: .unexpectedTensor)
        }
        self.layers = layers
    }

    /// A1111's `fix_old_state_dict`: `linear1.*` → `linear.0.*`, `linear2.*` → `linear.1.*`.
    static func renamingLegacyKeys(_ tensors: [String: Tensor]) -> [String: Tensor] {
        var out: [String: Tensor] = [:]
        for (key, t) in tensors {
            var k = key
            if k.hasPrefix("linear1.") { k = "linear.0." + k.dropFirst("linear1.".count) }
            if k.hasPrefix("linear2.") { k = "linear.1." + k.dropFirst("linear2.".count) }
            out[k] = t
        }
        return out
    }

    /// `x + linear(x) · multiplier` for `x` of shape [..., width], in F32.
    func callAsFunction(_ x: Tensor, multiplier: Float) -> Tensor {
        let rows = x.count / width
        let input = x.to(.f32).reshaped([rows, width])
        var h = input
        for layer in layers {
            switch layer {
            case let .linear(weightT, bias):
                h = h.matmul(weightT) + bias
            case .activation(let f):
                h = h.map { f($0) }
            case let .layerNorm(weight, bias):
                h = Self.layerNorm(h, weight: weight, bias: bias)
            }
        }
        // torch: x + (linear(x) * multiplier), the product rounded to F32 first.
        return (input + h.scaled(by: Double(multiplier))).reshaped(x.shape)
    }

    /// `torch.nn.LayerNorm` over the last axis (biased variance, eps 1e-5), statistics in Double.
    static func layerNorm(_ h: Tensor, weight: [Float], bias: [Float]) -> Tensor {
        let n = weight.count
        let rows = h.count / n
        let out = Tensor(uninitialized: h.shape, dtype: .f32)
        let input = h.contiguous()
        input.withFloats { src in
            out.withMutableFloats { dst in
                for r in 0..<rows {
                    let row = src.baseAddress! + r * n
                    var mean = 0.0
                    for j in 0..<n { mean += Double(row[j]) }
                    mean /= Double(n)
                    var variance = 0.0
                    for j in 0..<n { let d = Double(row[j]) - mean; variance += d * d }
                    variance /= Double(n)
                    let inv = 1 / (variance + 1e-5).squareRoot()
                    for j in 0..<n {
                        dst[r * n + j] = Float((Double(row[j]) - mean) * inv * Double(weight[j]) + Double(bias[j]))
                    }
                }
            }
        }
        return out
    }
}
