/// The Stable Diffusion base-model families the host knows.
public enum ModelFamily: String, Sendable, CaseIterable, Codable {
    case sd1
    case sd2
    case sdxl

    /// Width of the text context the UNet's cross-attention reads.
    public var contextWidth: Int {
        switch self {
        case .sd1: return 768
        case .sd2: return 1024
        case .sdxl: return 2048
        }
    }

    /// Number of text encoders.
    public var textEncoderCount: Int { self == .sdxl ? 2 : 1 }
}

/// The part of a model a tensor belongs to; TE and UNet take separate adapter weights.
public enum ModelPart: Hashable, Sendable, CustomStringConvertible {
    case unet
    /// Text encoder 0 (CLIP-L; SD2's OpenCLIP-H) or 1 (SDXL's OpenCLIP-bigG).
    case textEncoder(Int)
    case vae

    public var isTextEncoder: Bool { if case .textEncoder = self { return true } else { return false } }

    public var description: String {
        switch self {
        case .unet: return "unet"
        case .textEncoder(let i): return "te\(i + 1)"
        case .vae: return "vae"
        }
    }
}
