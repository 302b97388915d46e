import Foundation
import Host
import Tensor

/// Changes the rank of a LoRA's modules, as sd-scripts' networks/resize_lora.py does: per
/// module the product `up·down` (unscaled) is decomposed, the new rank chosen, and
/// `up = U·diag(S)`, `down = Vh` kept to that rank; alpha becomes `scale · new_rank`, so the
/// scale (alpha/rank) — and thus the strength the LoRA is used at — is unchanged.
///
/// The SVD of the product is computed exactly from the factors (QR of each, then the SVD of
/// the small r×r core), never from the dense matrix; its singular values are those of kohya's
/// full SVD (the rest of kohya's are zero up to rounding). A module is never grown past its
/// current rank. Rank rules (kohya's `rank_resize`):
///
/// - fixed: the requested rank (`--new_rank`; 4-D factors — LoCon and 1×1 conv LoRA — use the
///   conv rank, default the same);
/// - `sv_ratio` t: keep singular values larger than S₀/t;
/// - `sv_cumulative` t: the first index where cumsum(S)/ΣS reaches t (`searchsorted`), + 1;
/// - `sv_fro` t: the same on S², with t²;
///
/// then rank 1 when S₀ ≤ 1e-6 (a zero module), and at most the cap (kohya's `--new_rank` is the
/// hard limit of the dynamic rules; here `maxRank`, default the module's rank).
/// Reported per module: `fro_retained` = √(Σ_kept S²)/√(Σ S²) — kohya's "fro retained".
/// LoHa/LoKr/Tucker/full modules are resized from their dense delta (scale folded in, alpha =
/// new rank); weight-dependent modules (DoRA, IA3, OFT, GLoRA) are refused.
public enum LoRAResize {
    public enum RankRule: Equatable, Sendable, CustomStringConvertible {
        case fixed(Int)
        case svRatio(Double)
        case svFro(Double)
        case svCumulative(Double)

        /// kohya's method name, nil for a fixed rank.
        public var kohyaMethod: String? {
            switch self {
            case .fixed: return nil
            case .svRatio: return "sv_ratio"
            case .svFro: return "sv_fro"
            case .svCumulative: return "sv_cumulative"
            }
        }

        public var description: String {
            switch self {
            case .fixed(let r): return "rank \(r)"
            case .svRatio(let x): return "sv_ratio=\(x)"
            case .svFro(let x): return "sv_fro=\(x)"
            case .svCumulative(let x): return "sv_cumulative=\(x)"
            }
        }

        /// Parses `sv_ratio=X`, `sv_fro=X`, `sv_cumulative=X`.
        public init?(dynamic text: String) {
            let parts = text.split(separator: "=", maxSplits: 1).map(String.init)
            guard parts.count == 2, let value = Double(parts[1]), value.isFinite else { return nil }
            switch parts[0] {
            case "sv_ratio": self = .svRatio(value)
            case "sv_fro": self = .svFro(value)
            case "sv_cumulative": self = .svCumulative(value)
            default: return nil
            }
        }
    }

    /// kohya's `rank_resize` result for one module.
    public struct Selection: Equatable, Sendable {
        public let newRank: Int
        public let newAlpha: Float
        /// √(Σ_kept S²) / √(Σ S²).
        public let froRetained: Float
        /// Σ_kept |S| / Σ |S|.
        public let sumRetained: Float
        /// S₀ / S[newRank − 1].
        public let maxRatio: Float
    }

    /// Smallest singular value kohya treats as nonzero (`MIN_SV`).
    public static let minSingularValue: Float = 1e-6

    /// kohya's rank choice for singular values `s` (descending, F32 as torch computes them),
    /// `cap` the hard limit, `scale` the module's alpha/rank.
    public static func select(singularValues s: [Float], rule: RankRule, cap: Int, scale: Float) -> Selection {
        precondition(!s.isEmpty, "select: no singular values")
        func clampIndex(_ i: Int) -> Int { max(0, min(i, s.count - 1)) }
        /// torch.searchsorted (left): the first i with values[i] ≥ target, or values.count.
        func searchSorted(_ values: [Float], _ target: Double) -> Int {
            values.firstIndex { Double($0) >= target } ?? values.count
        }
        func cumulative(_ x: [Float]) -> [Float] {
            // float(torch.sum(x)) is a Python float; the tensor divided by it stays F32.
            let total = Float(Double(x.reduce(0, +)))
            var running: Float = 0
            return x.map { running += $0; return running / total }
        }
        var newRank: Int
        switch rule {
        case .fixed(let r):
            newRank = r
        case .svRatio(let t):
            let minSV = s[0] / Float(t)
            newRank = clampIndex(s.filter { $0 > minSV }.count - 1) + 1
        case .svCumulative(let t):
            newRank = clampIndex(searchSorted(cumulative(s), t)) + 1
        case .svFro(let t):
            newRank = clampIndex(searchSorted(cumulative(s.map { $0 * $0 }), t * t)) + 1
        }
        if s[0] <= minSingularValue {
            newRank = 1
        } else if newRank > cap {
            newRank = cap
        }
        let kept = min(newRank, s.count)
        let squares = s.map { $0 * $0 }
        let fro = squares[..<kept].reduce(0, +).squareRoot() / squares.reduce(0, +).squareRoot()
        let sum = s[..<kept].reduce(0) { $0 + abs($1) } / s.reduce(0) { $0 + abs($1) }
        return Selection(newRank: newRank, newAlpha: scale * Float(newRank), froRetained: fro, sumRetained: sum,
                         maxRatio: s[0] / s[kept - 1])
    }

    public struct Options {
        public var rule: RankRule
        /// Hard limit for every module (kohya's `--new_rank` under a dynamic rule); nil: the
        /// module's own rank.
        public var maxRank: Int?
        /// Rank for 4-D (conv) factors under a fixed rule (kohya's `--new_conv_rank`); nil: the rank.
        public var convRank: Int?
        /// Stored dtype; nil: each module's own.
        public var dtype: DType?
        /// Output dialect; nil: PEFT for PEFT input, kohya otherwise.
        public var format: LoRAOutputFormat?
        public init(rule: RankRule) { self.rule = rule }
    }

    public struct LayerReport: Sendable {
        public let name: String
        public let oldRank: Int
        public let newRank: Int
        public let newAlpha: Double
        public let froRetained: Double
        public let sumRetained: Double
    }

    public struct Result {
        public let tensors: [(String, Tensor)]
        public let metadata: [String: String]
        public let layers: [LayerReport]
    }

    public static func resize(_ input: LoRAOperationInput, options: Options, names: LoRANameSpace?) throws -> Result {
        switch options.rule {
        case .fixed(let r) where r < 1:
            throw LoRAOperationError(file: "", reason: "--rank must be ≥ 1, not \(r)")
        case .svRatio(let t) where !(t > 0), .svFro(let t) where !(t > 0), .svCumulative(let t) where !(t > 0):
            throw LoRAOperationError(file: "", reason: "--dynamic \(options.rule.kohyaMethod!) needs a positive value, not \(t)")
        default: break
        }
        if let m = options.maxRank, m < 1 { throw LoRAOperationError(file: "", reason: "--rank must be ≥ 1, not \(m)") }
        let format = options.format ?? (input.adapter.format == "peft" ? .peft : .kohya)
        var output = LoRAOutput()
        var reports: [LayerReport] = []
        var oldRanks: [Int] = []
        for module in input.adapter.modules {
            let id = try ModuleIdentity.of(module, in: input, names: names)
            let name = id.displayName(names)
            let u: Tensor, s: Tensor, vt: Tensor, scale: Double, oldRank: Int, shape: [Int], isConv: Bool, dtype: DType
            switch input.content(module) {
            case .factors(let f):
                (u, s, vt) = try LowRank.svdOfProduct(up: f.upMatrix, down: f.downMatrix)
                scale = f.scale
                oldRank = f.rank
                shape = [f.outFeatures, f.down.shape[1]] + (f.down.rank == 4 ? f.kernel : [])
                isConv = f.down.rank == 4
                dtype = f.down.dtype
            case .dense, .unsupported:
                let (matrix, natural) = try input.denseDelta(module)
                let full = try svd(matrix)
                (u, s, vt) = (full.u, full.s, full.vt)
                scale = 1
                oldRank = module.rank ?? min(matrix.shape[0], matrix.shape[1])
                shape = natural
                isConv = natural.count == 4
                dtype = .f32
            }
            oldRanks.append(oldRank)
            var rule = options.rule
            if case .fixed(let r) = rule, isConv, let c = options.convRank { rule = .fixed(c); _ = r }
            let cap = min(options.maxRank ?? oldRank, oldRank, s.count)
            let selection = select(singularValues: s.floats, rule: rule, cap: cap, scale: Float(scale))
            let k = selection.newRank
            let (up, down) = LowRank.kohyaFactors(u: u.sliced(axis: 1, 0..<k).contiguous(), s: s.sliced(axis: 0, 0..<k).contiguous(),
                                                  vt: vt.sliced(axis: 0, 0..<k).contiguous())
            let stored = options.dtype ?? dtype
            let (fu, fd) = LowRank.fileShaped(up: up.to(stored), down: down.to(stored), layerShape: shape)
            output.modules.append(OutputModule(layer: id.layer, rawName: module.name, up: fu, down: fd,
                                               alpha: Double(selection.newAlpha)))
            reports.append(LayerReport(name: name, oldRank: oldRank, newRank: k, newAlpha: Double(selection.newAlpha),
                                       froRetained: Double(selection.froRetained), sumRetained: Double(selection.sumRetained)))
        }
        guard !output.modules.isEmpty else { throw LoRAOperationError(file: input.path, reason: "no module to resize") }
        output.extraTensors = try input.embeddingKeys.map { ($0, try input.source.tensor(named: $0)) }
        let (tensors, formatMetadata) = try output.render(format: format, names: names, file: input.path)

        var metadata = LoRAMetadataBuilder.carried(input.adapter.metadata, to: format)
        metadata.merge(formatMetadata) { _, new in new }
        let oldDim = oldRanks.max() ?? 0
        let comment = metadata["ss_training_comment"] ?? ""
        if let method = options.rule.kohyaMethod, case let value = dynamicValue(options.rule) {
            metadata["ss_training_comment"] = "Dynamic resize with \(method): \(value) from \(oldDim); \(comment)"
            metadata["ss_network_dim"] = "Dynamic"
            metadata["ss_network_alpha"] = "Dynamic"
        } else if case .fixed(let r) = options.rule {
            let convDescription = options.convRank.map { $0 == r ? "" : " (conv: \($0))" } ?? ""
            metadata["ss_training_comment"] = "dimension is resized from \(oldDim) to \(r)\(convDescription); \(comment)"
            metadata["ss_network_dim"] = LoRAMetadataBuilder.dimString(output.modules.map(\.rank))
            metadata["ss_network_alpha"] = LoRAMetadataBuilder.alphaString(output.modules.map(\.alpha))
        }
        if format == .peft {
            for key in metadata.keys where key.hasPrefix("ss_network_") { metadata[key] = nil }
        } else if metadata["ss_network_module"] == nil || metadata["ss_network_module"]!.contains("lycoris") {
            metadata["ss_network_module"] = "networks.lora"
        }
        return Result(tensors: tensors, metadata: metadata, layers: reports)
    }

    private static func dynamicValue(_ rule: RankRule) -> String {
        switch rule {
        case .svRatio(let x), .svFro(let x), .svCumulative(let x): return LoRAMetadataBuilder.pythonFloat(x)
        case .fixed(let r): return String(r)
        }
    }
}
