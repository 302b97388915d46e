import CKernels
import Dispatch
import Host
import Tensor

/// `torch.nn.Linear`: y = x·Wᵀ + b over the last axis, as one GEMM over all rows.
///
/// The weight may be stored as [out, in] or as a 1×1 convolution [out, in, 1, 1] (SD1's
/// `proj_in`/`proj_out`, single-file VAE attention): both are the same matrix. Besides token
/// inputs [..., in], the layer reads channels-first images [B, in, H, W] as tokens [B, H·W, in]
/// and can write its output channels-first, with the transposition folded into the GEMM
/// (no permuted copies). In bypass mode the layer adds the adapters' contribution, asked
/// with the model's key and the layer kind the stored weight has (a 4-D weight is a 1×1
/// convolution, fed and answered channels-first).
public struct Linear {
    public let weight: Parameter
    public let bias: Parameter?
    public let inFeatures: Int
    public let outFeatures: Int

    /// The layer at `loader` (`weight`, and `bias` when the model has one).
    public init(_ loader: WeightLoader) throws {
        try BLAS.ensureLoaded()
        let weight = try loader.parameter("weight")
        try weight.require(weight.shape.count == 2 || (weight.shape.count == 4 && weight.shape[2] == 1 && weight.shape[3] == 1),
                           "a linear layer needs an [out, in] (or [out, in, 1, 1]) weight")
        self.weight = weight
        self.bias = try loader.optionalParameter("bias")
        self.outFeatures = weight.shape[0]
        self.inFeatures = weight.shape[1]
        if let bias { try bias.require(bias.shape == [outFeatures], "bias must have \(outFeatures) elements") }
    }

    /// The kind of layer adapters see: a 4-D stored weight is a 1×1 convolution.
    var layerKind: LayerKind { weight.storedShape.count == 4 ? .conv2d(stride: 1, padding: 0) : .linear }

    /// y = x·Wᵀ + b (+ `residual`, same shape as y) for `x` of shape [..., in].
    public func callAsFunction(_ x: Tensor, hooks: GenerationHooks = .none, workspace: Workspace,
                               adding residual: Tensor? = nil) throws -> Tensor {
        let out = workspace.tensor(Array(x.shape.dropLast()) + [outFeatures])
        try forward(x, into: out, hooks: hooks, workspace: workspace, adding: residual)
        return out
    }

    /// `callAsFunction` writing into `out` (contiguous F32 of the output's shape; may be a
    /// view of rows of a larger tensor).
    func forward(_ x: Tensor, into out: Tensor, hooks: GenerationHooks, workspace: Workspace,
                 adding residual: Tensor? = nil) throws {
        precondition(x.rank >= 1 && x.shape[x.rank - 1] == inFeatures,
                     "\(weight.diffusersKey): input \(x.shape) does not end in \(inFeatures)")
        let input = x.contiguousF32
        let rows = input.count / max(inFeatures, 1)
        precondition(out.count == rows * outFeatures, "\(weight.diffusersKey): output \(out.shape) for \(rows) rows")
        let accumulate = try prefillRows(out.f32Pointer, rows: rows, width: outFeatures,
                                         bias: bias?.floats(), residual: residual, shape: out.shape)
        try NetworkProfiler.measure("linear", flops: 2 * Double(rows * inFeatures * outFeatures)) {
            try workspace.withF32(weight.current()) { w in
                multiplyRows(rows: rows, input: input.f32Pointer, weight: w, accumulate: accumulate, out: out.f32Pointer)
            }
        }
        if let bypass = hooks.bypass(for: weight.modelKey) {
            // A 1×1 convolution is pointwise: on rows of pixels it is this linear layer, and the
            // adapters' terms (1×1 factors read as matrices) accumulate straight into `out`.
            try addBypassTerm(bypass, key: weight.modelKey, input: input, layer: .linear, into: out)
        }
    }

    /// The `tiledRowBlock` new layers get.
    nonisolated(unsafe) public static var defaultTiledRowBlock = 512
    /// Rows per independent single-threaded GEMM when a call is split over the cores (0: one
    /// multi-threaded GEMM always). A tuning knob; tests lower it with `tiledMinimumWork`.
    public var tiledRowBlock = Linear.defaultTiledRowBlock
    /// Multiply-adds (rows·in·out) from which a call is split into row blocks.
    public var tiledMinimumWork = 1 << 24

    /// out[rows, O] (+)= X[rows, in] · Wᵀ. Many rows (SD's 4096-token levels): blocks of
    /// `tiledRowBlock` rows go to whichever core asks next, each a single-threaded GEMM — no
    /// OpenBLAS barriers between the cores, and a core slowed by other work takes fewer blocks.
    func multiplyRows(rows: Int, input: UnsafePointer<Float>, weight w: UnsafePointer<Float>, accumulate: Bool,
                      out: UnsafeMutablePointer<Float>) {
        let (inFeatures, outFeatures, block) = (self.inFeatures, self.outFeatures, tiledRowBlock)
        let blocks = block > 0 ? (rows + block - 1) / block : 1
        if blocks < 2 || Parallel.coreCount < 2 || rows * inFeatures * outFeatures < tiledMinimumWork {
            sgemm(transB: true, m: rows, n: outFeatures, k: inFeatures, a: input, lda: inFeatures,
                  b: w, ldb: inFeatures, beta: accumulate ? 1 : 0, c: out, ldc: outFeatures)
            return
        }
        let next = TileCounter()
        Work.withSingleThreadedBLAS {
            DispatchQueue.concurrentPerform(iterations: min(Parallel.coreCount, blocks)) { _ in
                while let item = next.take(below: blocks) {
                    let r0 = item * block, n = min(block, rows - r0)
                    sgemm(transB: true, m: n, n: outFeatures, k: inFeatures, a: input + r0 * inFeatures, lda: inFeatures,
                          b: w, ldb: inFeatures, beta: accumulate ? 1 : 0, c: out + r0 * outFeatures, ldc: outFeatures)
                }
            }
        }
    }

    /// Tokens [B, H·W, out] from a channels-first image [B, in, H, W] (`transformer proj_in`).
    public func forward(channelsFirst x: Tensor, hooks: GenerationHooks = .none, workspace: Workspace) throws -> Tensor {
        precondition(x.rank == 4 && x.shape[1] == inFeatures, "\(weight.diffusersKey): input \(x.shape) is not [B, \(inFeatures), H, W]")
        let input = x.contiguousF32
        let (batch, plane) = (x.shape[0], x.shape[2] * x.shape[3])
        let out = workspace.tensor([batch, plane, outFeatures])
        let accumulate = try prefillRows(out.f32Pointer, rows: batch * plane, width: outFeatures,
                                         bias: bias?.floats(), residual: nil, shape: out.shape)
        try NetworkProfiler.measure("linear.proj_in", flops: 2 * Double(batch * plane * inFeatures * outFeatures)) {
            try workspace.withF32(weight.current()) { w in
                for b in 0..<batch {
                    // out_b[HW, O] = X_bᵀ · Wᵀ with X_b stored [in, HW].
                    sgemm(transA: true, transB: true, m: plane, n: outFeatures, k: inFeatures,
                          a: input.f32Pointer + b * inFeatures * plane, lda: plane, b: w, ldb: inFeatures,
                          beta: accumulate ? 1 : 0, c: out.f32Pointer + b * plane * outFeatures, ldc: outFeatures)
                }
            }
        }
        if let bypass = hooks.bypass(for: weight.modelKey) {
            // Tokens (a view of the image) through the layer as a linear one, also for a 1×1
            // convolution (pointwise): the terms accumulate straight into the tokens output.
            let tokens = input.reshaped([batch, inFeatures, plane]).permuted([0, 2, 1])
            try addBypassTerm(bypass, key: weight.modelKey, input: tokens, layer: .linear, into: out)
        }
        return out
    }

    /// A channels-first image [B, out, H, W] from tokens [B, H·W, in] (`transformer proj_out`),
    /// plus `residual` (same shape as the output) when given.
    public func forwardToChannelsFirst(_ x: Tensor, height: Int, width: Int, hooks: GenerationHooks = .none,
                                       workspace: Workspace, adding residual: Tensor? = nil) throws -> Tensor {
        let plane = height * width
        precondition(x.rank == 3 && x.shape[1] == plane && x.shape[2] == inFeatures,
                     "\(weight.diffusersKey): input \(x.shape) is not [B, \(plane), \(inFeatures)]")
        let input = x.contiguousF32
        let batch = x.shape[0]
        let out = workspace.tensor([batch, outFeatures, height, width])
        let accumulate = try prefillChannels(out.f32Pointer, batch: batch, channels: outFeatures, plane: plane,
                                             bias: bias?.floats(), residual: residual, shape: out.shape)
        try NetworkProfiler.measure("linear.proj_out", flops: 2 * Double(batch * plane * inFeatures * outFeatures)) {
            try multiplyChannelsFirst(tokens: input, into: out, batch: batch, plane: plane, accumulate: accumulate,
                                      workspace: workspace)
        }
        if let bypass = hooks.bypass(for: weight.modelKey) {
            if case .linear = layerKind {
                try addBypassTerm(bypass, key: weight.modelKey, input: input, layer: .linear, into: out) {
                    $0.reshaped([batch, plane, outFeatures]).permuted([0, 2, 1])
                }
            } else {
                let image = input.reshaped([batch, height, width, inFeatures]).permuted([0, 3, 1, 2])
                try addBypassTerm(bypass, key: weight.modelKey, input: image, layer: layerKind, into: out)
            }
        }
        return out
    }

    /// out_b[O, HW] (+)= W · T_bᵀ for tokens T_b [HW, in].
    func multiplyChannelsFirst(tokens input: Tensor, into out: Tensor, batch: Int, plane: Int, accumulate: Bool,
                               workspace: Workspace) throws {
        try workspace.withF32(weight.current()) { w in
            for b in 0..<batch {
                sgemm(transB: true, m: outFeatures, n: plane, k: inFeatures, a: w, lda: inFeatures,
                      b: input.f32Pointer + b * plane * inFeatures, ldb: inFeatures,
                      beta: accumulate ? 1 : 0, c: out.f32Pointer + b * outFeatures * plane, ldc: plane)
            }
        }
    }
}

// MARK: - Output initialisation and accumulation

/// Asks `bypass` for a layer's contribution (input as the adapters see the layer) and adds it
/// to `out`. Without `arrange` the contribution has out's layout and is accumulated straight
/// into it (`BypassPatch.addContribution`: LoRA adds its GEMM with beta = 1, no term tensor);
/// with `arrange`, which maps the contribution's layout onto out's, it is computed, then added.
func addBypassTerm(_ bypass: BypassPatch, key: String, input: Tensor, layer: LayerKind, into out: Tensor,
                   arrange: ((Tensor) -> Tensor)? = nil) throws {
    guard let arrange else {
        _ = try NetworkProfiler.measure("bypass.term") { try bypass.addContribution(for: key, input: input, layer: layer, into: out) }
        return
    }
    let term = try NetworkProfiler.measure("bypass.term") { try bypass.contribution(for: key, input: input, layer: layer) }
    guard let term else { return }
    NetworkProfiler.measure("bypass.add") { addInPlace(out, arrange(term)) }
}

/// Writes bias (per column) plus `residual` (same shape) into `rows × width` row-major `out`,
/// so that a following GEMM with beta = 1 adds its product. False (nothing written) when
/// there is neither, and the GEMM should run with beta = 0.
func prefillRows(_ out: UnsafeMutablePointer<Float>, rows: Int, width: Int, bias: [Float]?,
                 residual: Tensor?, shape: [Int]) throws -> Bool {
    if bias == nil && residual == nil { return false }
    let res = residual?.contiguousF32
    if let res { precondition(res.shape == shape, "residual \(res.shape) does not match output \(shape)") }
    let r = res.map { UnsafePointer($0.f32Pointer) }
    NetworkProfiler.measure("prefill") {
        withExtendedLifetime(res) {
            bias.withOptionalBuffer { b in
                Work.ranges(rows, costPerItem: width) { range in
                    for i in range {
                        let dst = out + i * width
                        switch (r, b) {
                        case let (r?, b?): for j in 0..<width { dst[j] = r[i * width + j] + b[j] }
                        case let (r?, nil): dst.update(from: r + i * width, count: width)
                        case let (nil, b?): dst.update(from: b, count: width)
                        default: break
                        }
                    }
                }
            }
        }
    }
    return true
}

/// Writes, for an NCHW output, bias[c] + extra[b, c] (per image and channel, e.g. the time
/// embedding) + residual (same shape) into `out`; false when there is nothing to write.
func prefillChannels(_ out: UnsafeMutablePointer<Float>, batch: Int, channels: Int, plane: Int, bias: [Float]?,
                     perImageChannel extra: [Float]? = nil, residual: Tensor?, shape: [Int]) throws -> Bool {
    if bias == nil && extra == nil && residual == nil { return false }
    let res = residual?.contiguousF32
    if let res { precondition(res.count == batch * channels * plane, "residual \(res.shape) does not match output \(shape)") }
    let r = res.map { UnsafePointer($0.f32Pointer) }
    NetworkProfiler.measure("prefill") {
        withExtendedLifetime(res) {
            Work.ranges(batch * channels, costPerItem: plane) { range in
                for bc in range {
                    var value: Float = bias?[bc % channels] ?? 0
                    if let extra { value += extra[bc] }
                    fillRun(out + bc * plane, count: plane, value: value, residual: r.map { $0 + bc * plane })
                }
            }
        }
    }
    return true
}

/// dst[i] = residual[i] + value (or value alone) for i < count: one channel plane's start.
@inline(__always)
func fillRun(_ dst: UnsafeMutablePointer<Float>, count: Int, value: Float, residual: UnsafePointer<Float>?) {
    if let residual {
        for i in 0..<count { dst[i] = residual[i] + value }
    } else {
        dst.update(repeating: value, count: count)
    }
}

/// out += term (any layout of the same element count and shape order), in parallel.
func addInPlace(_ out: Tensor, _ term: Tensor) {
    precondition(term.count == out.count, "cannot add \(term.shape) to \(out.shape)")
    let t = term.contiguousF32
    let dst = out.f32Pointer, src = UnsafePointer(t.f32Pointer)
    withExtendedLifetime(t) {
        Work.ranges(out.count, costPerItem: 1) { r in
            ah_nn_add_inplace(dst + r.lowerBound, src + r.lowerBound, r.count)
        }
    }
}

extension Optional where Wrapped == [Float] {
    /// The array's buffer (nil for nil) for the duration of `body`.
    func withOptionalBuffer<R>(_ body: (UnsafePointer<Float>?) throws -> R) rethrows -> R {
        switch self {
        case .none: return try body(nil)
        case .some(let array): return try array.withUnsafeBufferPointer { try body($0.baseAddress) }
        }
    }
}
