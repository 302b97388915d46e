import Dispatch
import Foundation
import Host
import Tensor

/// Zero padding on each side of an image.
public struct ConvPadding: Equatable, Sendable {
    public var top, bottom, left, right: Int

    public init(top: Int, bottom: Int, left: Int, right: Int) {
        (self.top, self.bottom, self.left, self.right) = (top, bottom, left, right)
    }

    /// The same padding on every side.
    public static func symmetric(_ p: Int) -> ConvPadding { ConvPadding(top: p, bottom: p, left: p, right: p) }

    var isSymmetric: Bool { top == bottom && left == right && top == left }
}

/// `torch.nn.Conv2d` (groups 1, dilation 1) on NCHW F32 images: im2col + one GEMM per block
/// of output rows (`W[O, C·kh·kw] · columns`), 1×1 stride-1 kernels as a plain GEMM.
///
/// Fusions the UNet and VAE use: the output is initialised with bias (+ a per-image,
/// per-channel term such as the resnet time embedding, + a residual image) and the GEMM
/// accumulates into it, so none of those costs a pass of its own; a nearest-neighbour 2×
/// upsampling of the input (`Upsample2D`) is read straight from the small image by the
/// unfolding, never materialised. Asymmetric padding covers the VAE encoder's
/// `F.pad(x, (0, 1, 0, 1))` before its stride-2 convolution.
public struct Conv2d {
    public let weight: Parameter
    public let bias: Parameter?
    public let stride: Int
    public let padding: ConvPadding
    public let inChannels, outChannels, kernelHeight, kernelWidth: Int

    /// Columns (floats) one unfolding block may hold (a tuning knob; tests lower it to
    /// exercise blocking): large enough for efficient GEMMs, small enough to stay in the
    /// last-level cache while OpenBLAS packs it.
    public var columnBudget = Conv2d.defaultColumnBudget
    /// The column budget new layers get.
    nonisolated(unsafe) public static var defaultColumnBudget = 1 << 22
    /// Output planes (outH·outW) from which the layer runs tile by tile, one tile per core at a
    /// time (`tiledUnfoldAndMultiply`); a tuning knob, tests lower it to exercise that path.
    public var tiledMinimumPlane = Conv2d.defaultTiledMinimumPlane

    /// The layer at `loader`; padding defaults to "same" for odd kernels (kernel/2).
    public init(_ loader: WeightLoader, stride: Int = 1, padding: ConvPadding? = nil) throws {
        try BLAS.ensureLoaded()
        let weight = try loader.parameter("weight")
        try weight.require(weight.shape.count == 4, "a convolution needs an [out, in, kh, kw] weight")
        self.weight = weight
        self.bias = try loader.optionalParameter("bias")
        (outChannels, inChannels, kernelHeight, kernelWidth) = (weight.shape[0], weight.shape[1], weight.shape[2], weight.shape[3])
        self.stride = stride
        self.padding = padding ?? .symmetric(kernelHeight / 2)
        if let bias { try bias.require(bias.shape == [outChannels], "bias must have \(outChannels) elements") }
    }

    /// Output height and width for an input of `height × width` (after the optional upsampling).
    public func outputSize(height: Int, width: Int, upsample: Int = 1) -> (height: Int, width: Int) {
        ((height * upsample + padding.top + padding.bottom - kernelHeight) / stride + 1,
         (width * upsample + padding.left + padding.right - kernelWidth) / stride + 1)
    }

    /// The convolution of `x` [B, C, H, W] (nearest-upsampled 2× first when `upsample2x`),
    /// plus bias, plus `perImageChannel[b·O + o]` and `residual` (output-shaped) when given.
    public func callAsFunction(_ x: Tensor, hooks: GenerationHooks = .none, workspace: Workspace,
                               upsample2x: Bool = false, perImageChannel: [Float]? = nil,
                               adding residual: Tensor? = nil) throws -> Tensor {
        precondition(x.rank == 4 && x.shape[1] == inChannels,
                     "\(weight.diffusersKey): input \(x.shape) is not [B, \(inChannels), H, W]")
        let input = x.contiguousF32
        let (batch, height, width) = (x.shape[0], x.shape[2], x.shape[3])
        let up = upsample2x ? 2 : 1
        let (outH, outW) = outputSize(height: height, width: width, upsample: up)
        precondition(outH > 0 && outW > 0, "\(weight.diffusersKey): kernel larger than the padded input \(x.shape)")
        let out = workspace.tensor([batch, outChannels, outH, outW])
        let plane = outH * outW
        if let perImageChannel { precondition(perImageChannel.count == batch * outChannels) }
        let pointwise = kernelHeight == 1 && kernelWidth == 1 && stride == 1 && up == 1
            && padding == .symmetric(0)
        let depth = inChannels * kernelHeight * kernelWidth
        let tileRows = pointwise ? nil : tiledRows(depth: depth, outH: outH, outW: outW)
        let step = pointwise ? "conv1x1" : "conv\(kernelHeight)x\(kernelWidth)" + (stride > 1 ? ".stride\(stride)" : "") + (upsample2x ? ".up2x" : "")
        if let tileRows {
            // Large images: every tile prefills, unfolds and multiplies on one core (see
            // `tiledUnfoldAndMultiply`), so the output is not prefilled here.
            let initial = try TileInitialisation(bias: bias?.floats(), perImageChannel: perImageChannel,
                                                 residual: residual?.contiguousF32, count: out.count)
            try NetworkProfiler.measure(step + ".tiled", flops: 2 * Double(out.count * depth)) {
                try workspace.withF32(weight.current()) { w in
                    tiledUnfoldAndMultiply(input, into: out, weight: w, upsample: up, rowsPerTile: tileRows,
                                           initial: initial, workspace: workspace)
                }
            }
        }
        let accumulate = tileRows != nil ? false
            : try prefillChannels(out.f32Pointer, batch: batch, channels: outChannels, plane: plane,
                                  bias: bias?.floats(), perImageChannel: perImageChannel,
                                  residual: residual, shape: out.shape)
        if tileRows == nil {
          try NetworkProfiler.measure(step, flops: 2 * Double(out.count * inChannels * kernelHeight * kernelWidth)) {
            try workspace.withF32(weight.current()) { w in
                if pointwise {
                    for b in 0..<batch {
                        sgemm(m: outChannels, n: plane, k: inChannels, a: w, lda: inChannels,
                              b: input.f32Pointer + b * inChannels * plane, ldb: plane,
                              beta: accumulate ? 1 : 0, c: out.f32Pointer + b * outChannels * plane, ldc: plane)
                    }
                } else {
                    unfoldAndMultiply(input, into: out, weight: w, upsample: up, accumulate: accumulate, workspace: workspace)
                }
            }
          }
        }
        if let bypass = hooks.bypass(for: weight.modelKey) {
            // Adapters see the layer as torch runs it: the (upsampled, pre-padded) input and
            // a symmetric-padding convolution.
            var seen = upsample2x ? upsampleNearest2x(input) : input
            var layerPadding = padding.top
            if !padding.isSymmetric {
                seen = seen.padded([(0, 0), (0, 0), (padding.top, padding.bottom), (padding.left, padding.right)])
                layerPadding = 0
            }
            try addBypassTerm(bypass, key: weight.modelKey, input: seen,
                              layer: .conv2d(stride: stride, padding: layerPadding), into: out)
        }
        return out
    }

    /// out (+)= W · im2col(input), one block of output rows at a time.
    private func unfoldAndMultiply(_ input: Tensor, into out: Tensor, weight w: UnsafePointer<Float>, upsample up: Int,
                                   accumulate: Bool, workspace: Workspace) {
        let (batch, height, width) = (input.shape[0], input.shape[2], input.shape[3])
        let (outH, outW) = (out.shape[2], out.shape[3])
        let depth = inChannels * kernelHeight * kernelWidth
        let rowsPerBlock = max(1, min(outH, columnBudget / max(1, depth * outW)))
        let columns = workspace.floats(.columns, count: depth * rowsPerBlock * outW)
        let unfold = Unfold(channels: inChannels, height: height, width: width, upsample: up,
                            kernelH: kernelHeight, kernelW: kernelWidth, stride: stride,
                            padTop: padding.top, padLeft: padding.left, outW: outW)
        for b in 0..<batch {
            let image = UnsafePointer(input.f32Pointer + b * inChannels * height * width)
            var row0 = 0
            while row0 < outH {
                let rows = min(rowsPerBlock, outH - row0)
                NetworkProfiler.measure("conv.unfold") {
                    unfold.columns(image, firstRow: row0, rows: rows, into: columns)
                }
                // out_b[:, rows of this block] (+)= W[O, depth] · columns[depth, rows·outW]
                sgemm(m: outChannels, n: rows * outW, k: depth, a: w, lda: depth, b: columns, ldb: rows * outW,
                      beta: accumulate ? 1 : 0, c: out.f32Pointer + b * outChannels * outH * outW + row0 * outW,
                      ldc: outH * outW)
                row0 += rows
            }
        }
    }
}

extension Conv2d {
    /// The `tiledMinimumPlane` new layers get: output planes at least this large (the VAE
    /// decoder's 128² to 512² levels) take the tiled path; smaller ones (all of the UNet at
    /// 64×64 latents) are few, wide GEMMs that OpenBLAS's own threading splits well.
    nonisolated(unsafe) public static var defaultTiledMinimumPlane = 1 << 14
    /// Columns (floats) one tile's unfolding may hold per core: about 8 MiB, so both cores'
    /// tiles stay in the last-level cache while OpenBLAS packs them.
    static let tileColumnBudget = 1 << 21

    /// Output rows per tile for the tiled path, or nil when the plane is too small for it
    /// (or there is one core). Tiles hold at least 512 output columns (GEMMs re-pack the
    /// weight per tile: ≥ 512 columns keeps that under ~4% of the work).
    func tiledRows(depth: Int, outH: Int, outW: Int) -> Int? {
        guard outH * outW >= tiledMinimumPlane, Parallel.coreCount > 1 else { return nil }
        let columns = max(512, min(4096, Conv2d.tileColumnBudget / max(1, depth)))
        return max(1, min(outH, columns / max(1, outW)))
    }

    /// out = initial + W · im2col(input) by tiles of `rowsPerTile` output rows: each core takes
    /// the next (image, tile) from a shared counter (dynamic: a core slowed by other work on
    /// the machine takes fewer tiles), writes the tile's initial values, unfolds the tile into
    /// its own column buffer and multiplies with a single-threaded GEMM — so the columns are
    /// still in cache when OpenBLAS packs them, unfolding runs on both cores, and no GEMM waits
    /// for the other core at OpenBLAS's internal barriers.
    func tiledUnfoldAndMultiply(_ input: Tensor, into out: Tensor, weight w: UnsafePointer<Float>, upsample up: Int,
                                rowsPerTile: Int, initial: TileInitialisation, workspace: Workspace) {
        let (batch, height, width) = (input.shape[0], input.shape[2], input.shape[3])
        let (outH, outW) = (out.shape[2], out.shape[3])
        let plane = outH * outW
        let depth = inChannels * kernelHeight * kernelWidth
        let tilesPerImage = (outH + rowsPerTile - 1) / rowsPerTile
        let items = batch * tilesPerImage
        let workers = min(Parallel.coreCount, items)
        // Per-worker column buffers, made before the parallel region (Workspace is not thread-safe).
        let columns = (0..<workers).map { workspace.floats(.tileColumns(worker: $0), count: depth * rowsPerTile * outW) }
        let unfold = Unfold(channels: inChannels, height: height, width: width, upsample: up,
                            kernelH: kernelHeight, kernelW: kernelWidth, stride: stride,
                            padTop: padding.top, padLeft: padding.left, outW: outW)
        let next = TileCounter()
        let (src, dst, channels) = (UnsafePointer(input.f32Pointer), out.f32Pointer, outChannels)
        withExtendedLifetime((input, initial)) {
            Work.withSingleThreadedBLAS {
                DispatchQueue.concurrentPerform(iterations: workers) { worker in
                    let buffer = columns[worker]
                    while let item = next.take(below: items) {
                        let b = item / tilesPerImage, row0 = (item % tilesPerImage) * rowsPerTile
                        let rows = min(rowsPerTile, outH - row0)
                        let tileOut = dst + b * channels * plane + row0 * outW
                        let accumulate = initial.write(into: tileOut, image: b, channels: channels, plane: plane,
                                                       offset: row0 * outW, count: rows * outW)
                        unfold.columns(src + b * inChannels * height * width, firstRow: row0, rows: rows,
                                       into: buffer, parallel: false)
                        sgemm(m: channels, n: rows * outW, k: depth, a: w, lda: depth, b: buffer, ldb: rows * outW,
                              beta: accumulate ? 1 : 0, c: tileOut, ldc: plane)
                    }
                }
            }
        }
    }
}

/// What a convolution's output starts from before its GEMM accumulates: bias[c] +
/// perImageChannel[b·C + c] + residual (output-shaped), any of them absent.
struct TileInitialisation {
    let bias: [Float]?
    let perImageChannel: [Float]?
    let residual: Tensor?

    init(bias: [Float]?, perImageChannel: [Float]?, residual: Tensor?, count: Int) {
        if let residual { precondition(residual.count == count, "residual \(residual.shape) does not match the output's \(count) elements") }
        (self.bias, self.perImageChannel, self.residual) = (bias, perImageChannel, residual)
    }

    /// Writes the initial values of elements offset ..< offset + count of every channel plane
    /// of image `image` (`tile` points at channel 0's element `offset`); false when there is
    /// nothing to write (the GEMM then overwrites with beta = 0).
    func write(into tile: UnsafeMutablePointer<Float>, image: Int, channels: Int, plane: Int, offset: Int, count: Int) -> Bool {
        if bias == nil && perImageChannel == nil && residual == nil { return false }
        let r = residual.map { UnsafePointer($0.f32Pointer) + image * channels * plane + offset }
        for c in 0..<channels {
            let value = (bias?[c] ?? 0) + (perImageChannel?[image * channels + c] ?? 0)
            fillRun(tile + c * plane, count: count, value: value, residual: r.map { $0 + c * plane })
        }
        return true
    }
}

/// A shared counter handing out work items 0, 1, 2, … to whichever thread asks first.
final class TileCounter: @unchecked Sendable {
    private let lock = NSLock()
    private var value = 0

    /// The next item, or nil once `limit` have been handed out.
    func take(below limit: Int) -> Int? {
        lock.lock()
        defer { lock.unlock() }
        guard value < limit else { return nil }
        value += 1
        return value - 1
    }
}

/// Nearest-neighbour 2× upsampling of NCHW F32 (`F.interpolate(scale_factor=2, mode="nearest")`).
func upsampleNearest2x(_ x: Tensor, workspace: Workspace? = nil) -> Tensor {
    upsampleNearest(x, height: x.shape[2] * 2, width: x.shape[3] * 2, workspace: workspace)
}

/// Nearest-neighbour resize of NCHW F32 to `height × width`, as torch's `nearest` mode:
/// source index = floor(dst · in / out) (clamped).
func upsampleNearest(_ x: Tensor, height: Int, width: Int, workspace: Workspace? = nil) -> Tensor {
    let input = x.contiguousF32
    let (batch, channels, inH, inW) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
    let out = newTensor([batch, channels, height, width], workspace)
    let src = UnsafePointer(input.f32Pointer), dst = out.f32Pointer
    let scaleH = Float(inH) / Float(height), scaleW = Float(inW) / Float(width)
    let columnIndex = (0..<width).map { min(Int((Float($0) * scaleW).rounded(.down)), inW - 1) }
    withExtendedLifetime(input) {
        columnIndex.withUnsafeBufferPointer { cols in
            Work.ranges(batch * channels, costPerItem: height * width) { range in
                for bc in range {
                    for oh in 0..<height {
                        let ih = min(Int((Float(oh) * scaleH).rounded(.down)), inH - 1)
                        let s = src + (bc * inH + ih) * inW, d = dst + (bc * height + oh) * width
                        for ow in 0..<width { d[ow] = s[cols[ow]] }
                    }
                }
            }
        }
    }
    return out
}

/// The im2col unfolding of one CHW image: row (c, ki, kj) of the columns holds, for each
/// output position (oh, ow), the (logically upsampled, padded) input at
/// (oh·stride − padTop + ki, ow·stride − padLeft + kj), or 0 outside the image.
struct Unfold {
    let channels, height, width, upsample, kernelH, kernelW, stride, padTop, padLeft, outW: Int

    /// Writes rows [depth, rows·outW] for output rows `firstRow ..< firstRow + rows`.
    /// `parallel`: split the rows over the cores (false inside a caller's own worker thread).
    func columns(_ image: UnsafePointer<Float>, firstRow: Int, rows: Int, into columns: UnsafeMutablePointer<Float>,
                 parallel: Bool = true) {
        let depth = channels * kernelH * kernelW, blockWidth = rows * outW
        let logicalH = height * upsample, logicalW = width * upsample
        let split: (Int, Int, (Range<Int>) -> Void) -> Void = parallel
            ? { Work.ranges($0, costPerItem: $1, $2) } : { count, _, body in body(0..<count) }
        split(depth, blockWidth) { range in
            for r in range {
                let c = r / (kernelH * kernelW), ki = (r / kernelW) % kernelH, kj = r % kernelW
                let shift = kj - padLeft
                // Output columns whose logical input column ow·stride + shift lies in [0, logicalW).
                let first = min(outW, shift >= 0 ? 0 : (-shift + stride - 1) / stride)
                let lastInput = logicalW - 1 - shift
                let end = lastInput < 0 ? first : max(first, min(outW, lastInput / stride + 1))
                for t in 0..<rows {
                    let dst = columns + r * blockWidth + t * outW
                    let ih = (firstRow + t) * stride - padTop + ki
                    if ih < 0 || ih >= logicalH {
                        dst.update(repeating: 0, count: outW)
                        continue
                    }
                    let src = image + (c * height + ih / upsample) * width
                    dst.update(repeating: 0, count: first)
                    if upsample == 1 && stride == 1 {
                        (dst + first).update(from: src + (first + shift), count: end - first)
                    } else if upsample == 1 {
                        for ow in first..<end { dst[ow] = src[ow * stride + shift] }
                    } else if upsample == 2 && stride == 1 {
                        // Logical column ow + shift ≥ 0 reads source column (ow + shift) / 2.
                        for ow in first..<end { dst[ow] = src[(ow + shift) >> 1] }
                    } else {
                        for ow in first..<end { dst[ow] = src[(ow * stride + shift) / upsample] }
                    }
                    (dst + end).update(repeating: 0, count: outW - end)
                }
            }
        }
    }
}
