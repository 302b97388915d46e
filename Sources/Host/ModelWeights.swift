import Foundation
import Tensor

/// How a model's tensors are named.
public enum ModelNaming: String, Sendable {
    /// A1111/ComfyUI single-file checkpoints: ldm keys (SD1/SD2) or sgm keys (SDXL),
    /// `model.diffusion_model.…`, `cond_stage_model.…`, `conditioner.embedders.N.…`.
    case singleFile
    /// A diffusers folder, keys prefixed by component: `unet.…`, `text_encoder.…`,
    /// `text_encoder_2.…`, `vae.…`.
    case diffusers
}

/// A model tensor an adapter module changes.
public struct Target: Hashable, Sendable {
    /// The model's weight key.
    public let weightKey: String
    /// The model's bias key for the same layer, when it has one.
    public let biasKey: String?
    /// For fused tensors (OpenCLIP `in_proj_weight`: q, k, v stacked on dim 0), the rows
    /// this module owns.
    public let rows: Range<Int>?
    /// UNet or which text encoder.
    public let part: ModelPart
    /// Layer kind for bypass mode.
    public let layer: LayerKind

    public init(weightKey: String, biasKey: String?, rows: Range<Int>? = nil, part: ModelPart, layer: LayerKind) {
        self.weightKey = weightKey
        self.biasKey = biasKey
        self.rows = rows
        self.part = part
        self.layer = layer
    }
}

extension LayerKind: Hashable {
    public func hash(into hasher: inout Hasher) {
        switch self {
        case .linear: hasher.combine(0)
        case let .conv2d(stride, padding): hasher.combine(1); hasher.combine(stride); hasher.combine(padding)
        case .norm: hasher.combine(2)
        case .embedding: hasher.combine(3)
        }
    }
}

/// A base model's tensors by key, with its family. Tensors are views (zero-copy for mapped
/// files); the patch engine replaces touched tensors and keeps the originals to restore.
public final class ModelWeights {
    /// Where the tensors came from, for messages.
    public let path: String
    public let family: ModelFamily
    public let naming: ModelNaming
    /// True for inpainting UNets (9 input channels: latent, mask, masked-image latent).
    public let isInpainting: Bool
    /// Keys in file order.
    public let keys: [String]
    private var tensors: [String: Tensor]
    private var lazyIndex: TargetIndex?
    private var lazyFileHash: String??

    /// A model over `tensors` (keys in order). `family` is detected when nil.
    public init(path: String, keys: [String], tensors: [String: Tensor], naming: ModelNaming,
                family: ModelFamily) {
        self.path = path
        self.keys = keys
        self.tensors = tensors
        self.naming = naming
        self.family = family
        let convIn = naming == .singleFile ? "model.diffusion_model.input_blocks.0.0.weight" : "unet.conv_in.weight"
        self.isInpainting = tensors[convIn].map { $0.rank == 4 && $0.shape[1] == 9 } ?? false
    }

    /// The tensor stored under `key` now.
    public func tensor(_ key: String) -> Tensor? { tensors[key] }

    /// Replaces the tensor under an existing key (same shape and dtype).
    public func replace(_ key: String, with tensor: Tensor) {
        guard let old = tensors[key] else { preconditionFailure("no tensor \(key) in \(path)") }
        precondition(old.shape == tensor.shape && old.dtype == tensor.dtype,
                     "replacement for \(key) must keep \(old.dtype.rawValue)\(old.shape)")
        tensors[key] = tensor
    }

    /// SHA-256 (lower-case hex) of the file at `path`, or nil when `path` is no regular file
    /// (a diffusers folder, an in-memory model). It identifies the file on disk, not the current
    /// (possibly patched) tensors. Computed on first use — it reads the whole file — then kept.
    public func fileSHA256() throws -> String? {
        if let known = lazyFileHash { return known }
        var isDirectory: ObjCBool = false
        let hash: String?
        if FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), !isDirectory.boolValue {
            hash = try SHA256.hash(fileAt: path).hex
        } else {
            hash = nil
        }
        lazyFileHash = .some(hash)
        return hash
    }

    /// The names adapters use for this model's layers, resolved to tensors (built once).
    public var targetIndex: TargetIndex {
        if let index = lazyIndex { return index }
        let index = TargetIndex(model: self)
        lazyIndex = index
        return index
    }
}
