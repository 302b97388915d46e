import Foundation
import Host
import Tensor

/// Combines several LoRA files into one, three ways:
///
/// - `concat` (exact): per layer the inputs' factors are stacked along the rank, each scaled so
///   the new module's delta is exactly Σ wᵢ·Δᵢ: with cᵢ = wᵢ·scaleᵢ, `upᵢ·sign(cᵢ)·√|cᵢ|` and
///   `downᵢ·√|cᵢ|`; the rank is Σ rᵢ and alpha = rank (scale 1). LoRA/LoCon factors only.
/// - `svd`: per layer the dense Σ wᵢ·Δᵢ truncated to rank R (`--conv-rank` for kernels larger
///   than 1×1): the best rank-R approximation, up to the randomized SVD's ≤ 1.05× (exact SVD for
///   small layers). Any weight-independent module type (LoRA, LoCon, Tucker, LoHa, LoKr, full)
///   is combined through its dense delta — the only way to combine different types.
/// - `linear`: kohya's legacy `merge_lora_models` (networks/merge_lora.py): per layer,
///   `up = Σ upᵢ·|sᵢ|`, `down = Σ downᵢ·sᵢ` with `sᵢ = √(alphaᵢ/alpha₀)·wᵢ` (alpha₀: the first
///   input's), alpha = alpha₀. Ranks must agree. INEXACT: the product of sums is not the sum
///   of products (cross terms upᵢ·downⱼ appear); kept for reproducing kohya's results.
///
/// Weight-dependent modules (DoRA, IA3, OFT, GLoRA) cannot be combined without the base
/// model and are refused.
public enum LoRACombine {
    public enum Mode: String, CaseIterable, Sendable { case concat, svd, linear }

    public struct Input {
        public let file: LoRAOperationInput
        /// wᵢ: the strength this input is combined at.
        public let weight: Double
        public init(file: LoRAOperationInput, weight: Double) {
            self.file = file
            self.weight = weight
        }
    }

    public struct Options {
        public var mode: Mode
        /// Rank of `svd` results (required for `svd`).
        public var rank: Int?
        /// Rank of `svd` results for kernels larger than 1×1 (default: `rank`).
        public var convRank: Int?
        public var format: LoRAOutputFormat = .kohya
        /// Stored dtype of the factors; nil: the inputs' dtype when that is exact (concat with
        /// every cᵢ = 1, linear/svd: always), F32 otherwise.
        public var dtype: DType?
        public var seed: UInt64 = 0x5EED
        public init(mode: Mode, rank: Int? = nil, convRank: Int? = nil) {
            self.mode = mode
            self.rank = rank
            self.convRank = convRank
        }
    }

    /// What happened to one layer.
    public struct LayerReport: Sendable {
        public let name: String
        /// How many inputs change this layer.
        public let inputs: Int
        public let rank: Int
        /// `svd`: ‖Σ wᵢΔᵢ − result‖_F / ‖Σ wᵢΔᵢ‖_F (0 when the sum is 0); nil otherwise.
        public let relativeError: Double?
    }

    public struct Result {
        public let tensors: [(String, Tensor)]
        public let metadata: [String: String]
        public let layers: [LayerReport]
    }

    /// Combines `inputs` (see the type's documentation). `names` translates module names
    /// (``LoRANameSpace/resolve(for:model:family:)``); without one, only identically named
    /// modules meet and the output keeps the names as read. `title` names the output in its metadata.
    public static func combine(_ inputs: [Input], options: Options, names: LoRANameSpace?, title: String) throws -> Result {
        guard !inputs.isEmpty else { throw LoRAOperationError(file: "", reason: "nothing to combine") }
        if options.mode == .svd {
            guard let rank = options.rank, rank >= 1 else {
                throw LoRAOperationError(file: "", reason: "--mode svd needs --rank R (R ≥ 1)")
            }
            if let c = options.convRank, c < 1 { throw LoRAOperationError(file: "", reason: "--conv-rank must be ≥ 1, not \(c)") }
            _ = rank
        } else if options.rank != nil || options.convRank != nil {
            throw LoRAOperationError(file: "", reason: "--rank/--conv-rank apply to --mode svd only (\(options.mode.rawValue) keeps the inputs' ranks)")
        }
        for input in inputs where !input.weight.isFinite {
            throw LoRAOperationError(file: input.file.path, reason: "weight \(input.weight) is not a finite number")
        }

        // Group the modules by the layer they change, in first-seen order.
        var order: [ModuleIdentity] = []
        var groups: [ModuleIdentity: [(input: Int, module: any AdapterModule)]] = [:]
        for (i, input) in inputs.enumerated() {
            for module in input.file.adapter.modules {
                let id = try ModuleIdentity.of(module, in: input.file, names: names)
                if groups[id] == nil { order.append(id); groups[id] = [] }
                if groups[id]!.contains(where: { $0.input == i }) {
                    throw LoRAOperationError(file: input.file.path, module: module.name, reason: "two modules of this file change the same layer")
                }
                groups[id]!.append((i, module))
            }
        }

        let inputDTypes = Set(inputs.flatMap { input in input.file.adapter.modules.compactMap { m -> DType? in
            if case .factors(let f) = input.file.content(m) { return f.up.dtype }
            return nil
        } })
        let commonDType = inputDTypes.count == 1 ? inputDTypes.first! : DType.f32

        var output = LoRAOutput()
        var reports: [LayerReport] = []
        var everyScaleIsOne = true
        for (index, id) in order.enumerated() {
            let members = groups[id]!
            let name = id.displayName(names)
            let module: OutputModule?
            var relativeError: Double?
            switch options.mode {
            case .concat:
                let (m, unscaled) = try concat(members, inputs: inputs, id: id)
                module = m
                everyScaleIsOne = everyScaleIsOne && unscaled
            case .linear:
                module = try linear(members, inputs: inputs, id: id)
            case .svd:
                let result = try svdSum(members, inputs: inputs, id: id, options: options, seed: options.seed &+ UInt64(index))
                module = result.module
                relativeError = result.relativeError
            }
            guard let module else { continue }
            output.modules.append(module)
            reports.append(LayerReport(name: name, inputs: members.count, rank: module.rank, relativeError: relativeError))
        }

        // Stored dtype.
        let dtype = options.dtype ?? (options.mode == .concat && !everyScaleIsOne ? .f32 : commonDType)
        for i in output.modules.indices {
            output.modules[i].up = output.modules[i].up.to(dtype)
            output.modules[i].down = output.modules[i].down.to(dtype)
        }
        output.extraTensors = try embeddings(inputs)

        let (tensors, formatMetadata) = try output.render(format: options.format, names: names, file: "combined output")
        var metadata = formatMetadata
        let family = names?.family ?? inputs.lazy.compactMap(\.file.adapter.baseModel).first
        if options.format == .kohya {
            metadata.merge(LoRAMetadataBuilder.kohyaNetwork(
                family: family, dim: LoRAMetadataBuilder.dimString(output.modules.map(\.rank)),
                alpha: LoRAMetadataBuilder.alphaString(output.modules.map(\.alpha)))) { _, new in new }
        }
        metadata.merge(LoRAMetadataBuilder.modelSpec(family: family, title: title,
                                                     mergedFrom: inputs.map { ($0.file.fileName as NSString).deletingPathExtension })) { _, new in new }
        if let tags = LoRAMetadataBuilder.combinedTagFrequency(inputs.map(\.file.adapter.metadata)) {
            metadata["ss_tag_frequency"] = tags
        }
        return Result(tensors: tensors, metadata: metadata, layers: reports)
    }

    // MARK: Modes

    private static func factors(_ member: (input: Int, module: any AdapterModule), _ inputs: [Input]) throws -> LoRAFactors {
        let file = inputs[member.input].file
        guard case .factors(let f) = file.content(member.module) else {
            throw LoRAOperationError(file: file.path, module: member.module.name,
                reason: "a \(member.module.moduleType) module: concat and linear combine LoRA/LoCon factors only; "
                    + "--mode svd combines any weight-independent types (LoHa, LoKr, Tucker, full) through their dense deltas")
        }
        return f
    }

    /// Checks that the factors of one layer fit together (same output, input and kernel).
    private static func requireSameShape(_ all: [(LoRAFactors, Int)], _ inputs: [Input], _ members: [(input: Int, module: any AdapterModule)]) throws {
        let (first, firstInput) = all[0]
        for (f, i) in all.dropFirst() where f.outFeatures != first.outFeatures || f.flatInFeatures != first.flatInFeatures
            || f.kernel != first.kernel {
            throw LoRAOperationError(file: "\(inputs[firstInput].file.path) and \(inputs[i].file.path)",
                module: members[0].module.name,
                reason: "the modules do not fit one layer: up \(first.up.shape)/down \(first.down.shape) vs up \(f.up.shape)/down \(f.down.shape)")
        }
    }

    /// Stacked factors; `unscaled` is true when every cᵢ was 1 (the factors are the inputs' own).
    private static func concat(_ members: [(input: Int, module: any AdapterModule)], inputs: [Input],
                               id: ModuleIdentity) throws -> (OutputModule?, unscaled: Bool) {
        let all = try members.map { (try factors($0, inputs), $0.input) }
        try requireSameShape(all, inputs, members)
        var ups: [Tensor] = [], downs: [Tensor] = []
        var unscaled = true
        for (f, i) in all {
            let c = inputs[i].weight * f.scale
            if c == 0 { continue }
            if c == 1 {
                ups.append(f.upMatrix)
                downs.append(f.downMatrix)
                continue
            }
            unscaled = false
            let root = abs(c).squareRoot()
            ups.append(f.upMatrix.scaled(by: c < 0 ? -root : root))
            downs.append(f.downMatrix.scaled(by: root))
        }
        guard !ups.isEmpty else { return (nil, unscaled) }
        let up = Tensor.concat(ups, axis: 1), down = Tensor.concat(downs, axis: 0)
        let first = all[0].0
        var shape = [first.outFeatures, first.down.shape[1]]
        if first.down.rank == 4 { shape += first.kernel }
        let (u, d) = LowRank.fileShaped(up: up, down: down, layerShape: shape)
        return (OutputModule(layer: id.layer, rawName: id.rawName, up: u, down: d, alpha: Double(down.shape[0])), unscaled)
    }

    /// kohya's `merge_lora_models` for one layer.
    private static func linear(_ members: [(input: Int, module: any AdapterModule)], inputs: [Input],
                               id: ModuleIdentity) throws -> OutputModule? {
        let all = try members.map { (try factors($0, inputs), $0.input) }
        try requireSameShape(all, inputs, members)
        let first = all[0].0
        for (f, i) in all where f.rank != first.rank {
            throw LoRAOperationError(file: inputs[i].file.path, module: members[0].module.name,
                reason: "--mode linear adds factors elementwise and needs equal ranks (\(f.rank) vs \(first.rank)); use concat or svd")
        }
        let baseAlpha = first.kohyaAlpha
        var up = Tensor(zeros: [first.outFeatures, first.rank]), down = Tensor(zeros: [first.rank, first.flatInFeatures])
        for (f, i) in all {
            let ratio = f.kohyaAlpha / baseAlpha
            guard ratio >= 0, ratio.isFinite else {
                throw LoRAOperationError(file: inputs[i].file.path, module: members[0].module.name,
                    reason: "alpha \(f.kohyaAlpha) against the first input's \(baseAlpha): kohya's √(alpha/alpha₀) is undefined")
            }
            let s = ratio.squareRoot() * inputs[i].weight
            up = up.addingScaled(f.upMatrix, alpha: abs(s))
            down = down.addingScaled(f.downMatrix, alpha: s)
        }
        var shape = [first.outFeatures, first.down.shape[1]]
        if first.down.rank == 4 { shape += first.kernel }
        let (u, d) = LowRank.fileShaped(up: up, down: down, layerShape: shape)
        return OutputModule(layer: id.layer, rawName: id.rawName, up: u, down: d, alpha: baseAlpha)
    }

    /// The dense sum truncated to the requested rank.
    private static func svdSum(_ members: [(input: Int, module: any AdapterModule)], inputs: [Input], id: ModuleIdentity,
                               options: Options, seed: UInt64) throws -> (module: OutputModule?, relativeError: Double) {
        var sum: Tensor?
        var shape: [Int] = []
        var firstPath = ""
        for member in members {
            let file = inputs[member.input].file
            let (matrix, natural) = try file.denseDelta(member.module)
            if let existing = sum {
                guard existing.shape == matrix.shape, natural.count == shape.count || natural.reduce(1, *) == shape.reduce(1, *) else {
                    throw LoRAOperationError(file: "\(firstPath) and \(file.path)", module: member.module.name,
                                             reason: "the modules do not fit one layer: deltas \(shape) and \(natural)")
                }
                sum = existing.addingScaled(matrix, alpha: inputs[member.input].weight)
            } else {
                sum = matrix.scaled(by: inputs[member.input].weight)
                shape = natural
                firstPath = file.path
            }
        }
        guard let sum else { return (nil, 0) }
        let isConv = shape.count == 4 && shape[2] * shape[3] > 1
        let rank = (isConv ? options.convRank : nil) ?? options.rank!
        let norm = sum.frobeniusNorm()
        let (u, s, vt) = try LowRank.truncatedSVD(sum, rank: rank, seed: seed)
        let (up, down) = LowRank.balancedFactors(u: u, s: s, vt: vt)
        let error = norm == 0 ? 0 : LowRank.frobeniusDistance(up.matmul(down), sum) / norm
        let (fu, fd) = LowRank.fileShaped(up: up, down: down, layerShape: shape)
        return (OutputModule(layer: id.layer, rawName: id.rawName, up: fu, down: fd, alpha: Double(fd.shape[0])), error)
    }

    /// Bundled embeddings of every input (the same name twice is an error).
    static func embeddings(_ inputs: [Input]) throws -> [(String, Tensor)] {
        var out: [(String, Tensor)] = []
        var owner: [String: String] = [:]
        for input in inputs {
            for key in input.file.embeddingKeys {
                if let other = owner[key] {
                    throw LoRAOperationError(file: input.file.path, module: key, reason: "bundled embedding also in \(other)")
                }
                owner[key] = input.file.path
                out.append((key, try input.file.source.tensor(named: key)))
            }
        }
        return out
    }
}
