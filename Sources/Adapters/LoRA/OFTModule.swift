import Host
import Tensor

/// OFT and BOFT: an orthogonal rotation of the output channels,
/// W' = rescale ⊙ R(W), ΔW = strength · (W' − W) (A1111: `(merged − W)·multiplier`).
///
/// Files:
/// - `oft_blocks` `[k, b, b]` — kohya's OFT (sd-scripts `networks/oft.py`) and LyCORIS's
///   diag-OFT: skew parameters. Q = B − Bᵀ; when the constraint c = alpha·out > 0 and
///   ‖Q‖+1e-8 > c, Q ← Q·c/(‖Q‖+1e-8) (LyCORIS; kohya's clamp differs by < 1e-8 relative);
///   R = (I + Q)(I − Q)⁻¹ per block (Cayley, in F64). W' = blockdiag(Rᵀ)·W, i.e.
///   `einsum('k n m, k n ... -> k m ...', R, W)` — kohya's `x @ R` on the layer output.
/// - `oft_blocks` `[m, k, b, b]` — LyCORIS BOFT: m butterfly stages; stage i regroups the
///   rows in pairs of runs of 2ⁱ·b/2 and applies R_i (not transposed) per block.
/// - `oft_diag` (LyCORIS 2.0/2.1 files): R itself was stored; used as is (A1111).
/// - `rescale` `[out, 1, …]`: per-output scaling after the rotation.
///
/// Peers: A1111 reads every `oft_blocks` as kohya's OFT, so a LyCORIS diag-OFT file saved
/// with the default constraint 0 clamps ‖Q‖ to 0 there (no change at all), and BOFT's 4-D
/// `oft_blocks` do not load. ComfyUI uses c = alpha (not alpha·out) and applies the
/// strength twice (`weight += strength · (strength·(R − I)·W)`). LyCORIS's BOFT merge
/// interpolates each stage, R_i·strength + (1 − strength)·I, which differs from this for
/// strength ≠ 1; its diag-OFT merge equals this.
final class OFTModule: WeightDependentModule {
    /// Skew parameters (Cayley) or stored rotations.
    let blocks: Tensor
    let storesRotation: Bool
    let butterfly: Bool
    /// alpha (the constraint per output channel); nil or ≤ 0: no constraint.
    let constraint: Double?
    let rescale: Tensor?

    init(reader: ModuleReader) throws {
        if let b = try reader.optional(.oftBlocks) {
            blocks = b
            storesRotation = false
        } else {
            blocks = try reader.required(.oftDiag)
            storesRotation = true
        }
        let role: KeyGrammar.Role = storesRotation ? .oftDiag : .oftBlocks
        try reader.requireRank(blocks, role, [3, 4], "[blocks, b, b] (OFT) or [stages, blocks, b, b] (BOFT)")
        butterfly = blocks.rank == 4
        let b = blocks.shape[blocks.rank - 1]
        guard blocks.shape[blocks.rank - 2] == b, b > 0 else {
            throw reader.failure(.badShape(suffix: role.rawValue, shape: blocks.shape, expected: "square blocks"))
        }
        if butterfly, b % 2 != 0 {
            throw reader.failure(.badShape(suffix: role.rawValue, shape: blocks.shape, expected: "BOFT blocks of even size"))
        }
        constraint = try reader.scalar(.alpha)
        rescale = try reader.optional(.rescale)
        super.init(name: reader.name, moduleType: butterfly ? "boft" : "oft", rank: nil, alpha: constraint)
    }

    /// The rotations `[…, b, b]` (F64): Cayley transform of the skew part, constrained.
    func rotations(outChannels: Int) throws -> Tensor {
        let p = blocks.to(.f64)
        if storesRotation { return p }
        var q = p - p.transposed(-2, -1)
        if let constraint, constraint > 0 {
            let c = constraint * Double(outChannels)
            let norm = q.frobeniusNorm() + 1e-8
            if norm > c { q = q.scaled(by: c / norm) }
        }
        let b = blocks.shape[blocks.rank - 1]
        var identityValues = [Double](repeating: 0, count: b * b)
        for i in 0..<b { identityValues[i * b + i] = 1 }
        let identity = Tensor(shape: [b, b], doubles: identityValues)
        return (identity + q).matmul(try inverse(identity - q))
    }

    override func delta(weight: Tensor, options: DeltaOptions) throws -> ModuleDelta {
        let w = weight.to(.f32)
        let out = w.shape[0]
        let rest = w.count / max(out, 1)
        let r = try rotations(outChannels: out).to(.f32)
        let b = blocks.shape[blocks.rank - 1], k = blocks.shape[blocks.rank - 3]
        guard k * b == out else {
            throw DeltaShapeError(module: name, delta: blocks.shape, weight: w.shape, context: "OFT: \(k) blocks of \(b) channels")
        }
        var rows = w.reshaped([out, rest])
        if butterfly {
            for stage in 0..<blocks.shape[0] {
                let run = (1 << stage) * (b / 2)
                guard out % (2 * run) == 0 else {
                    throw DeltaShapeError(module: name, delta: blocks.shape, weight: w.shape, context: "BOFT stage \(stage)")
                }
                let groups = out / (2 * run)
                // (c g k) → (c k g): interleave the two runs of each group, rotate, undo.
                let gathered = rows.reshaped([groups, 2, run, rest]).permuted([0, 2, 1, 3]).contiguous()
                let rotated = r.sliced(axis: 0, stage..<(stage + 1)).squeezed(0)
                    .matmul(gathered.reshaped([k, b, rest]))
                rows = rotated.reshaped([groups, run, 2, rest]).permuted([0, 2, 1, 3]).contiguous().reshaped([out, rest])
            }
        } else {
            rows = r.transposed(-2, -1).matmul(rows.reshaped([k, b, rest])).reshaped([out, rest])
        }
        var merged = rows.reshaped(w.shape)
        if let rescale {
            guard rescale.count == out else {
                throw DeltaShapeError(module: name, delta: rescale.shape, weight: w.shape, context: "OFT rescale per output channel")
            }
            var shape = [Int](repeating: 1, count: w.rank)
            shape[0] = out
            merged = merged * rescale.to(.f32).reshaped(shape)
        }
        return ModuleDelta(weight: (merged - w).scaled(by: Double(options.strength)))
    }
}
