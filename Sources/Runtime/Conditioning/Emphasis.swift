import Tensor

/// How prompt emphasis (`(word:1.3)`, `[word]`) changes the encoder's output: A1111's
/// "Emphasis mode" setting (`modules/sd_emphasis.py`).
public enum EmphasisMode: String, Sendable, CaseIterable {
    /// z·multipliers, then rescaled so the chunk's mean is what it was (A1111's default).
    case original = "Original"
    /// z·multipliers, no rescaling.
    case noNorm = "No norm"
    /// Emphasis syntax is parsed away but has no effect.
    case ignore = "Ignore"
    /// No parsing: brackets and weights are prompt text.
    case none = "None"

    /// Whether the chunker parses emphasis syntax (everything but `.none`).
    public var parsesSyntax: Bool { self != .none }

    /// The emphasised output of one chunk: `z` [tokens, width] (F32, contiguous) with one
    /// multiplier per token.
    ///
    /// Computed as A1111 does it in PyTorch: the multipliers are a float64 tensor, so
    /// `z * multipliers` is float64; `original_mean` is z's float32 mean; the result is scaled
    /// by `original_mean / new_mean` (F64) and only rounded to F32 at the end. Means are taken
    /// over the whole chunk (every token and channel), per chunk and per encoder, since
    /// `process_tokens` runs once per chunk and encoder.
    public func apply(to z: Tensor, multipliers: [Double]) -> Tensor {
        precondition(z.rank == 2 && z.shape[0] == multipliers.count,
                     "emphasis: \(multipliers.count) multipliers for output \(z.shape)")
        switch self {
        case .ignore, .none:
            return z
        case .original, .noNorm:
            if multipliers.allSatisfy({ $0 == 1 }) { return z }   // z·1·(m/m) = z exactly
            let width = z.shape[1]
            let source = z.contiguousF32
            let out = Tensor(uninitialized: z.shape)
            source.withFloats { s in
                let count = s.count
                var sum = 0.0
                for v in s { sum += Double(v) }
                // torch's float32 mean, then promoted to float64 by the division below.
                let originalMean = Double(Float(sum / Double(count)))
                var weighted = [Double](repeating: 0, count: count)
                var newSum = 0.0
                for (row, m) in multipliers.enumerated() {
                    for j in 0..<width {
                        let value = Double(s[row * width + j]) * m
                        weighted[row * width + j] = value
                        newSum += value
                    }
                }
                let scale = self == .original ? originalMean / (newSum / Double(count)) : 1
                let d = out.f32Pointer
                for i in 0..<count { d[i] = Float(weighted[i] * scale) }
            }
            return out
        }
    }
}
