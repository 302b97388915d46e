import Foundation

/// A hypernetwork activation: A1111's `activation_dict` — its own seven names ("swish" is
/// `torch.nn.Hardswish` there, not SiLU) plus every `torch.nn` activation class by its
/// lower-case name, with the class's default arguments and inference (eval) behaviour.
///
/// Classes that cannot act elementwise on a `[batch, tokens, width]` context are refused at
/// load: `Softmax`/`Softmin`/`LogSoftmax` (with no `dim` torch picks dim 0 of a 3-D input, the
/// batch — never meaningful), `Softmax2d`, `GLU` (halves the width, the next linear would
/// not fit), `MultiheadAttention` and `Threshold` (need constructor arguments A1111 does not pass).
enum Activation: Equatable {
    case relu, leakyReLU, elu, hardswish, tanh, sigmoid, celu, gelu, hardshrink, hardsigmoid, hardtanh
    case logsigmoid, mish, relu6, selu, silu, softplus, softshrink, softsign, tanhshrink
    /// `RReLU` in eval mode: a leaky ReLU with slope (lower + upper) / 2 = (1/8 + 1/3) / 2.
    case rrelu
    /// `PReLU`: a leaky ReLU whose slope is a learned parameter (`num_parameters=1`).
    case prelu(slope: Float)

    /// Whether A1111 adds a module for `name` at all ("linear" and None add none).
    static func addsModule(_ name: String?) -> Bool { name != nil && name != "linear" }

    /// Names taking a parameter tensor (its `weight`).
    static func hasParameter(_ name: String) -> Bool { name == "prelu" }

    /// The activation for A1111's `name` (PReLU's slope given separately), or nil.
    static func named(_ name: String, preluSlope: Float = 0.25) -> Activation? {
        switch name {
        case "relu": return .relu
        case "leakyrelu": return .leakyReLU
        case "elu": return .elu
        case "swish", "hardswish": return .hardswish
        case "tanh": return .tanh
        case "sigmoid": return .sigmoid
        case "celu": return .celu
        case "gelu": return .gelu
        case "hardshrink": return .hardshrink
        case "hardsigmoid": return .hardsigmoid
        case "hardtanh": return .hardtanh
        case "logsigmoid": return .logsigmoid
        case "mish": return .mish
        case "relu6": return .relu6
        case "selu": return .selu
        case "silu": return .silu
        case "softplus": return .softplus
        case "softshrink": return .softshrink
        case "softsign": return .softsign
        case "tanhshrink": return .tanhshrink
        case "rrelu": return .rrelu
        case "prelu": return .prelu(slope: preluSlope)
        default: return nil
        }
    }

    /// The function at `x` (torch's formula and defaults, evaluated in Double and rounded).
    func callAsFunction(_ xf: Float) -> Float {
        let x = Double(xf)
        let y: Double
        switch self {
        case .relu: y = max(x, 0)
        case .leakyReLU: y = x > 0 ? x : x * 0.01
        case .elu, .celu: y = x > 0 ? x : Foundation.expm1(x)    // alpha = 1 (CELU = ELU then)
        case .hardswish: y = x * min(max(x + 3, 0), 6) / 6
        case .tanh: y = Foundation.tanh(x)
        case .sigmoid: y = 1 / (1 + Foundation.exp(-x))
        case .gelu: y = 0.5 * x * (1 + Foundation.erf(x / 2.0.squareRoot()))   // approximate="none"
        case .hardshrink: y = abs(x) > 0.5 ? x : 0
        case .hardsigmoid: y = min(max(x + 3, 0), 6) / 6
        case .hardtanh: y = min(max(x, -1), 1)
        case .logsigmoid: y = min(x, 0) - Foundation.log1p(Foundation.exp(-abs(x)))
        case .mish: y = x * Foundation.tanh(Activation.softplus(x))
        case .relu6: y = min(max(x, 0), 6)
        case .selu:
            let alpha = 1.6732632423543772848170429916717, scale = 1.0507009873554804934193349852946
            y = scale * (x > 0 ? x : alpha * Foundation.expm1(x))
        case .silu: y = x / (1 + Foundation.exp(-x))
        case .softplus: y = Activation.softplus(x)
        case .softshrink: y = x > 0.5 ? x - 0.5 : (x < -0.5 ? x + 0.5 : 0)
        case .softsign: y = x / (1 + abs(x))
        case .tanhshrink: y = x - Foundation.tanh(x)
        case .rrelu: y = x >= 0 ? x : x * ((1.0 / 8 + 1.0 / 3) / 2)
        case .prelu(let slope): y = x >= 0 ? x : Double(slope) * x
        }
        return Float(y)
    }

    /// `torch.nn.Softplus()` (beta 1, threshold 20: linear above it).
    private static func softplus(_ x: Double) -> Double { x > 20 ? x : Foundation.log1p(Foundation.exp(x)) }
}
