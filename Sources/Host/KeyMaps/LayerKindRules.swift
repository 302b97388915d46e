/// The layer kind of a target weight, from its part, its diffusers module path and the
/// model's actual tensor shape (so SD1's 1×1-conv `proj_in` is a convolution and SD2/SDXL's
/// is linear, and the single-file VAE attention's 1×1 convs are convolutions while the
/// diffusers ones are linear).
enum LayerKindRules {
    /// Convolutions whose stride/padding is not "stride 1, padding kernel/2": matched by the
    /// end of the diffusers module path within a part.
    static let convolutions: [(part: ModelPart, pathSuffix: String, stride: Int, padding: Int)] = [
        // UNet Downsample2D (ldm `input_blocks.N.0.op`): 3×3, stride 2, padding 1.
        (.unet, "downsamplers.0.conv", 2, 1),
        // VAE encoder Downsample: 3×3, stride 2, padding 0 after an asymmetric zero pad of one
        // pixel right and bottom (F.pad(x, (0, 1, 0, 1))), which LayerKind cannot express:
        // bypass callers must pad first.
        (.vae, "downsamplers.0.conv", 2, 0),
    ]

    /// Rank-2 weights that are lookup tables, not linear layers.
    static let embeddingSuffixes = ["token_embedding", "position_embedding"]

    /// The layer kind, or nil for tensors that are no adapter target (scalars, rank 3).
    static func kind(part: ModelPart, diffusersPath path: String, shape: [Int]) -> LayerKind? {
        switch shape.count {
        case 4:
            if let rule = convolutions.first(where: { $0.part == part && path.hasSuffix($0.pathSuffix) }) {
                return .conv2d(stride: rule.stride, padding: rule.padding)
            }
            // Every other SD convolution is stride 1 with "same" padding: 3×3 → 1, 1×1 → 0.
            return .conv2d(stride: 1, padding: shape[2] / 2)
        case 2:
            return embeddingSuffixes.contains(where: { path.hasSuffix($0) }) ? .embedding : .linear
        case 1:
            // Rank-1 weights in SD models are GroupNorm/LayerNorm scales (biases are not indexed).
            return .norm
        default:
            return nil
        }
    }
}
