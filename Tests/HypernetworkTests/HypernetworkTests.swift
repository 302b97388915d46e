import Foundation
import Host
import Hypernetwork
import SafeTensors
import Tensor
import Testing
import TorchPickle

/// Tests/HypernetworkTests/Fixtures (made by tools/gen_ti_hn_db_fixtures.py).
let hnFixtures: String = Bundle.module.resourceURL!.appendingPathComponent("Fixtures").path

func hnRegistry() throws -> AdapterRegistry {
    let registry = AdapterRegistry()
    try registerHypernetwork(into: registry)
    return registry
}

func hnSource(_ path: String) throws -> TensorSource {
    path.hasSuffix(".safetensors") ? try SafeTensorsFile(path: path) : try TorchFile(path: path)
}

/// max over elements of |a − b| / max(|b|, 1): relative for values of magnitude ≥ 1, absolute below.
func relativeError(_ a: Tensor, _ b: Tensor) -> Double {
    let x = a.doubles, y = b.doubles
    precondition(x.count == y.count && a.shape == b.shape, "shapes \(a.shape) vs \(b.shape)")
    return zip(x, y).reduce(0) { max($0, abs($1.0 - $1.1) / max(abs($1.1), 1)) }
}

/// The single transform of a loaded hypernetwork file.
func loadTransform(_ file: String) throws -> (Adapter, HypernetworkTransform) {
    let adapter = try hnRegistry().load(try hnSource("\(hnFixtures)/\(file)"))
    let transform = try #require(adapter.contextTransforms.first as? HypernetworkTransform)
    return (adapter, transform)
}

@Suite struct HypernetworkReferenceTests {
    static let expected = try! SafeTensorsFile(path: "\(hnFixtures)/expected.safetensors")
    static let strength: Float = 0.7

    static let pickleCases: [(file: String, widths: [Int])] = [
        ("relu_ln.pt", [8, 12]), ("deep_dropout.pt", [8]), ("swish_out.pt", [8]), ("linear_ln.pt", [8]),
        ("prelu.pt", [8]), ("old_dropout.pt", [8]), ("legacy.pt", [8, 12]),
    ]
    static let activations = ["linear", "relu", "leakyrelu", "elu", "swish", "hardswish", "tanh", "sigmoid", "celu",
                              "gelu", "hardshrink", "hardsigmoid", "hardtanh", "logsigmoid", "mish", "prelu", "relu6",
                              "rrelu", "selu", "silu", "softplus", "softshrink", "softsign", "tanhshrink"]

    /// transform(x) against torch's A1111 module for every width of `file`.
    func check(_ file: String, widths: [Int]) throws {
        let (adapter, transform) = try loadTransform(file)
        let name = String(file.split(separator: ".")[0])
        #expect(adapter.methodIDs == ["hypernetwork"])
        #expect(adapter.modules.isEmpty && adapter.embeddings.isEmpty && adapter.unclaimedKeys.isEmpty)
        #expect(transform.widths == widths)
        #expect(transform.name == name)
        for width in widths {
            let x = try Self.expected.tensor(named: "\(name).\(width).x")
            let out = try #require(try transform.transform(context: x, width: width, strength: Self.strength))
            let kError = relativeError(out.key, try Self.expected.tensor(named: "\(name).\(width).k"))
            let vError = relativeError(out.value, try Self.expected.tensor(named: "\(name).\(width).v"))
            #expect(kError <= 1e-5 && vError <= 1e-5, "\(file) width \(width): k \(kError), v \(vError)")
        }
    }

    @Test(arguments: pickleCases.map(\.file))
    func a1111PickleMatchesTorch(_ file: String) throws {
        try check(file, widths: Self.pickleCases.first { $0.file == file }!.widths)
    }

    @Test(arguments: activations)
    func safetensorsFormMatchesTorch(_ activation: String) throws {
        try check("act_\(activation).safetensors", widths: [4])
    }

    @Test func chainFeedsKeysAndValuesSeparately() throws {
        let (_, first) = try loadTransform("relu_ln.pt")
        let (_, second) = try loadTransform("swish_out.pt")
        let x = try Self.expected.tensor(named: "chain.8.x")
        // Through the protocol, as the runtime calls it.
        let transforms: [(any ContextTransform, Float)] = [(first, 0.7), (second, 1.3)]
        var key = x, value = x
        for (t, strength) in transforms {
            let out = try #require(try t.transform(key: key, value: value, width: 8, strength: strength))
            (key, value) = (out.key, out.value)
        }
        #expect(relativeError(key, try Self.expected.tensor(named: "chain.8.k")) <= 1e-5)
        #expect(relativeError(value, try Self.expected.tensor(named: "chain.8.v")) <= 1e-5)
        // Feeding the second one a single context (the first's key output) is not A1111's chain.
        let single = try #require(try second.transform(context: key, width: 8, strength: 1.3))
        #expect(relativeError(single.value, try Self.expected.tensor(named: "chain.8.v")) > 1e-3)
    }

    @Test func otherWidthsAreLeftAlone() throws {
        let (_, transform) = try loadTransform("relu_ln.pt")
        #expect(try transform.transform(context: Tensor(zeros: [1, 2, 16]), width: 16, strength: 1) == nil)
    }

    @Test func strengthZeroIsTheIdentityAndDTypeIsKept() throws {
        let (_, transform) = try loadTransform("relu_ln.pt")
        let x = try Self.expected.tensor(named: "relu_ln.8.x")
        let out = try #require(try transform.transform(context: x, width: 8, strength: 0))
        #expect(out.key.floats == x.floats && out.value.floats == x.floats)
        let half = x.to(.f16)
        let out16 = try #require(try transform.transform(context: half, width: 8, strength: Self.strength))
        #expect(out16.key.dtype == .f16 && out16.key.shape == x.shape)
        #expect(relativeError(out16.key, try Self.expected.tensor(named: "relu_ln.8.k")) <= 1e-2)
    }

    @Test func storedOptionsAreRead() throws {
        let (adapter, deep) = try loadTransform("deep_dropout.pt")
        #expect(deep.options.layerStructure == [1, 1.5, 2, 1])
        #expect(deep.options.activation == "leakyrelu")
        #expect(deep.options.layerNorm && deep.options.activateOutput)
        #expect(deep.options.dropoutStructure == [0, 0.3, 0.3, 0])
        #expect(deep.storedName == "stored-deep_dropout")
        #expect(adapter.metadata["step"] == "1200")
        #expect(adapter.baseModel == nil)   // widths of no real family
        // Saved without dropout_structure: rebuilt from use_dropout and last_layer_dropout.
        let (_, old) = try loadTransform("old_dropout.pt")
        #expect(old.options.dropoutStructure == [0, 0.3, 0.3, 0])
        // The oldest layout: no options at all, A1111's defaults.
        let (_, legacy) = try loadTransform("legacy.pt")
        #expect(legacy.options.layerStructure == [1, 2, 1] && legacy.options.activation == nil)
        #expect(!legacy.options.layerNorm && legacy.options.activateOutput)
    }
}

/// Hypernetworks built in memory (safetensors form): option handling and every load error.
@Suite struct HypernetworkFileRuleTests {
    /// A [1, 2, 1] MLP pair for `width` with deterministic weights.
    static func tensors(width: Int, hidden: Int? = nil) -> [(String, Tensor)] {
        let h = hidden ?? 2 * width
        var out: [(String, Tensor)] = []
        var seed: Float = 0.1
        func values(_ n: Int) -> [Float] { (0..<n).map { _ in seed = (seed * 7.13).truncatingRemainder(dividingBy: 1.9) - 0.9; return seed } }
        for half in 0..<2 {
            out.append(("\(width).\(half).linear.0.weight", Tensor(shape: [h, width], values: values(h * width))))
            out.append(("\(width).\(half).linear.0.bias", Tensor(shape: [h], values: values(h))))
            out.append(("\(width).\(half).linear.1.weight", Tensor(shape: [width, h], values: values(width * h))))
            out.append(("\(width).\(half).linear.1.bias", Tensor(shape: [width], values: values(width))))
        }
        return out
    }

    func load(_ tensors: [(String, Tensor)], _ metadata: [String: String] = [:]) throws -> Adapter {
        try hnRegistry().load(InMemoryTensorSource(path: "mem.safetensors", tensors: tensors, metadata: metadata))
    }

    @Test func linearNoActivationIsTwoMatmuls() throws {
        // Reference: x + (relu-free) W2·(W1·x + b1) + b2 at strength s, computed naively in Double.
        let t = Self.tensors(width: 3)
        let adapter = try load(t, ["activation_func": "None"])
        let transform = try #require(adapter.contextTransforms.first)
        let x = Tensor(shape: [2, 3], values: [0.5, -1, 2, 0.25, 0.75, -0.5])
        let out = try #require(try transform.transform(context: x, width: 3, strength: 0.5))
        let w1 = t[0].1.doubles, b1 = t[1].1.doubles, w2 = t[2].1.doubles, b2 = t[3].1.doubles
        let xs = x.doubles
        var expected: [Double] = []
        for r in 0..<2 {
            let row: [Double] = Array(xs[(r * 3)..<(r * 3 + 3)])
            var hidden = [Double](repeating: 0, count: 6)
            for i in 0..<6 {
                var sum: Double = b1[i]
                for k in 0..<3 { sum += w1[i * 3 + k] * row[k] }
                hidden[i] = sum
            }
            for j in 0..<3 {
                var sum: Double = b2[j]
                for k in 0..<6 { sum += w2[j * 6 + k] * hidden[k] }
                expected.append(row[j] + 0.5 * sum)
            }
        }
        #expect(relativeError(out.key, Tensor(shape: [2, 3], doubles: expected)) <= 1e-6)
    }

    @Test func familyComesFromTheTextWidth() throws {
        // layer_structure [1, 0.002, 1]: int(768·0.002) = 1 hidden unit (keeps the test small).
        let t = Self.tensors(width: 768, hidden: 1)
        let adapter = try load(t, ["layer_structure": "[1, 0.002, 1]"])
        #expect(adapter.baseModel == .sd1)
        #expect((adapter.contextTransforms.first as? HypernetworkTransform)?.widths == [768])
    }

    @Test func unsupportedActivationIsNamed() throws {
        #expect(throws: HypernetworkError(file: "mem.safetensors", key: "activation_func", rule: .unsupportedActivation("softmax"))) {
            try load(Self.tensors(width: 3), ["activation_func": "softmax"])
        }
    }

    @Test func strictStateDict() throws {
        var missing = Self.tensors(width: 3)
        missing.removeAll { $0.0 == "3.1.linear.1.bias" }
        #expect(throws: HypernetworkError(file: "mem.safetensors", key: "3.1.linear.1.bias", rule: .missingTensor)) {
            try load(missing)
        }
        // A layer norm the options do not ask for.
        let extra = Self.tensors(width: 3) + [("3.0.linear.2.weight", Tensor(zeros: [3]))]
        #expect(throws: HypernetworkError(file: "mem.safetensors", key: "3.0.linear.2.weight", rule: .unexpectedTensor)) {
            try load(extra)
        }
        // The options ask for a layer norm the file lacks.
        #expect(throws: HypernetworkError(file: "mem.safetensors", key: "3.0.linear.1.weight", rule: .badShape(shape: [3, 6], expected: [6]))) {
            try load(Self.tensors(width: 3), ["is_layer_norm": "True"])
        }
    }

    @Test func badOptionsAreNamed() throws {
        #expect(throws: HypernetworkError(file: "mem.safetensors", key: "layer_structure", rule: .badLayerStructure([2, 1]))) {
            try load(Self.tensors(width: 3), ["layer_structure": "[2, 1]"])
        }
        #expect(throws: HypernetworkError(file: "mem.safetensors", key: "is_layer_norm", rule: .badOption(value: "maybe", expected: "True or False"))) {
            try load(Self.tensors(width: 3), ["is_layer_norm": "maybe"])
        }
    }

    @Test func contextOfAnotherWidthIsAnError() throws {
        let transform = try #require(try load(Self.tensors(width: 3)).contextTransforms.first)
        #expect(throws: HypernetworkError.self) {
            _ = try transform.transform(context: Tensor(zeros: [2, 4]), width: 3, strength: 1)
        }
    }
}
