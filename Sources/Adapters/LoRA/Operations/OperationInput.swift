import Foundation
import Host
import SafeTensors
import Tensor

/// Why a LoRA operation (combine, extract, resize, convert) cannot run. Nothing is written
/// when one is thrown.
public struct LoRAOperationError: Error, CustomStringConvertible, Equatable {
    /// The file (or files) the problem is in, or "" when it is about the arguments.
    public let file: String
    /// The module (as written in its file), or "" for file-level problems.
    public let module: String
    /// The rule that is broken, in words.
    public let reason: String

    public init(file: String, module: String = "", reason: String) {
        self.file = file
        self.module = module
        self.reason = reason
    }

    public var description: String {
        let place = [file, module.isEmpty ? "" : "module '\(module)'"].filter { !$0.isEmpty }.joined(separator: ": ")
        return place.isEmpty ? reason : "\(place): \(reason)"
    }
}

/// A LoRA module in factor form: ΔW = `scale` · up · down, with
/// `up [out, r]` (or `[out, r, 1, 1]`) and `down [r, in]` (or `[r, in, kh, kw]`, LoCon).
/// The factors are the file's tensors as stored (dtype kept), so rewriting them is lossless.
public struct LoRAFactors {
    /// `[out, r]` or `[out, r, 1, 1]`.
    public var up: Tensor
    /// `[r, in]` or `[r, in, kh, kw]`.
    public var down: Tensor
    /// The factor every `up · down` is multiplied by (alpha/r, alpha/√r for rsLoRA, or 1).
    public var scale: Double

    public init(up: Tensor, down: Tensor, scale: Double) {
        self.up = up
        self.down = down
        self.scale = scale
    }

    /// The rank r.
    public var rank: Int { down.shape[0] }
    /// Output features.
    public var outFeatures: Int { up.shape[0] }
    /// The kernel `[kh, kw]` (`[1, 1]` for linear factors).
    public var kernel: [Int] { down.rank == 4 ? Array(down.shape[2...]) : [1, 1] }
    /// Input features times the kernel size: the width of `down` as a matrix.
    public var flatInFeatures: Int { down.count / max(rank, 1) }
    /// The alpha that gives `scale` under kohya's rule (scale = alpha / rank).
    public var kohyaAlpha: Double { scale * Double(rank) }

    /// `up` as an F32 matrix `[out, r]`.
    public var upMatrix: Tensor { up.to(.f32).reshaped([outFeatures, rank]) }
    /// `down` as an F32 matrix `[r, in·kh·kw]`.
    public var downMatrix: Tensor { down.to(.f32).reshaped([rank, flatInFeatures]) }

    /// The delta `scale · up · down` as a matrix `[out, in·kh·kw]` (F32).
    public func denseMatrix() -> Tensor { upMatrix.matmul(downMatrix).scaled(by: scale) }
}

/// One module of an input file, as the operations see it.
enum OperationModuleContent {
    /// Plain LoRA/LoCon factors (lossless to rewrite).
    case factors(LoRAFactors)
    /// A weight-independent module (LoHa, LoKr, Tucker LoRA, full): only its dense delta.
    case dense(WeightDeltaModule)
    /// A module whose delta needs the base weight (DoRA, IA3, OFT, GLoRA) or that changes a
    /// bias or norm: operations without the base model cannot rewrite it.
    case unsupported(type: String)
}

/// An input file of an operation: its adapter (LoRA family), the raw source for keys that are
/// carried over unchanged (bundled embeddings), and its modules classified.
public final class LoRAOperationInput {
    public let path: String
    public let source: SafeTensorsFile
    public let adapter: Adapter
    /// Bundled-embedding keys (`bundle_emb.*`), carried over as they are.
    public let embeddingKeys: [String]

    /// Opens `path` and loads it with the LoRA family. Keys no LoRA-family type understands
    /// are an error: an operation would drop them silently.
    public init(path: String) throws {
        self.path = path
        let source: SafeTensorsFile
        do {
            source = try SafeTensorsFile(path: path)
        } catch {
            throw LoRAOperationError(file: path, reason: "\(error)".replacingOccurrences(of: "\(path): ", with: ""))
        }
        self.source = source
        let registry = AdapterRegistry()
        try registerLoRAFamily(into: registry)
        let adapter: Adapter
        do {
            adapter = try registry.load(source)
        } catch let error as DetectionError {
            throw LoRAOperationError(file: path, reason: "not a LoRA-family file (\(error.description.replacingOccurrences(of: "\(path): ", with: "")))")
        }
        guard adapter.unclaimedKeys.isEmpty else {
            let sample = adapter.unclaimedKeys.prefix(3).joined(separator: ", ")
            throw LoRAOperationError(file: path, reason: "\(adapter.unclaimedKeys.count) keys no LoRA-family type understands (\(sample)); refusing to drop them")
        }
        self.adapter = adapter
        embeddingKeys = source.names.filter { $0.hasPrefix("bundle_emb.") }
    }

    /// The file name without its directory.
    public var fileName: String { (path as NSString).lastPathComponent }

    /// The content of `module` for an operation.
    func content(_ module: any AdapterModule) -> OperationModuleContent {
        // A PEFT `lora_B.bias` has no kohya form and the factor operations drop biases:
        // such a module is `.unsupported` (refused by name) rather than rewritten without it.
        if let lora = module as? LoRAModule, lora.mid == nil, lora.upBias == nil {
            return .factors(LoRAFactors(up: lora.up, down: lora.down, scale: lora.scale))
        }
        if let weightDelta = module as? WeightDeltaModule, !weightDelta.changesBias,
           weightDelta.moduleType != "norm" {
            return .dense(weightDelta)
        }
        return .unsupported(type: module.moduleType)
    }

    /// The module's dense delta as a matrix `[out, in·kh·kw]` (F32) and its natural shape.
    func denseDelta(_ module: any AdapterModule) throws -> (matrix: Tensor, shape: [Int]) {
        switch content(module) {
        case .factors(let f):
            var shape = [f.outFeatures, f.down.shape[1]]
            if f.down.rank == 4 { shape += f.kernel }
            return (f.denseMatrix(), shape)
        case .dense(let m):
            guard let w = try m.unitDelta(dynRank: nil).weight, w.rank >= 2 else {
                throw LoRAOperationError(file: path, module: module.name, reason: "a \(module.moduleType) module without a weight delta")
            }
            return (w.to(.f32).reshaped([w.shape[0], w.count / w.shape[0]]), w.shape)
        case .unsupported(let type):
            throw LoRAOperationError(file: path, module: module.name,
                reason: "a \(type) module depends on the base weight (or changes a bias/norm); it cannot be rewritten without the model")
        }
    }
}
