/// 2-D convolution (cross-correlation, as torch) through im2col + GEMM.
extension Tensor {
    /// `torch.nn.functional.conv2d(self, weight, bias, stride, padding)` with dilation 1 and
    /// groups 1. `self` is NCHW (or CHW, unbatched), `weight` OIHW with I = C, `bias` [O].
    /// Zero padding. See `conv2d(weight:bias:stride:padding:)` with per-axis values for details.
    public func conv2d(weight: Tensor, bias: Tensor? = nil, stride: Int = 1, padding: Int = 0) -> Tensor {
        conv2d(weight: weight, bias: bias, stride: (stride, stride), padding: (padding, padding))
    }

    /// 2-D convolution with separate height and width stride and padding. Output
    /// `[N, O, (H + 2·padH − KH) / strideH + 1, (W + 2·padW − KW) / strideW + 1]`.
    ///
    /// Computes in F32 (F64 when input or weight is F64); other dtypes are widened. A 1×1
    /// kernel with stride 1 and no padding is one GEMM per image (`W[O, C] · X[C, H·W]`);
    /// otherwise columns are unfolded (im2col) in blocks of output rows that keep the buffer
    /// near 8 MB, each block one GEMM. Precondition: shapes agree and the output is not empty.
    public func conv2d(weight: Tensor, bias: Tensor? = nil, stride: (height: Int, width: Int),
                       padding: (height: Int, width: Int)) -> Tensor {
        let dtype = bias.map { computeDType(self, weight, $0) } ?? computeDType(self, weight)
        switch dtype {
        case .f64: return conv2dTyped(Double.self, self, weight, bias, stride, padding)
        default: return conv2dTyped(Float.self, self, weight, bias, stride, padding)
        }
    }
}

/// Elements (of the compute type) the im2col buffer may hold per block.
let im2colBlockElements = 1 << 21

/// Convolution in `T`; `blockElements` bounds the im2col buffer (tests pass small values to
/// exercise blocking).
func conv2dTyped<T: ComputeScalar>(_: T.Type, _ input: Tensor, _ weight: Tensor, _ bias: Tensor?,
                                   _ stride: (height: Int, width: Int), _ padding: (height: Int, width: Int),
                                   blockElements: Int = im2colBlockElements) -> Tensor {
    precondition(input.rank == 4 || input.rank == 3, "conv2d: input \(input.shape) is not NCHW or CHW")
    precondition(weight.rank == 4, "conv2d: weight \(weight.shape) is not OIHW")
    let unbatched = input.rank == 3
    let x = (unbatched ? input.unsqueezed(0) : input).contiguousCompute(T.self)
    let w = weight.contiguousCompute(T.self)
    let (batch, channels, height, width) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
    let (outChannels, kernelH, kernelW) = (w.shape[0], w.shape[2], w.shape[3])
    precondition(w.shape[1] == channels,
                 "conv2d: weight \(weight.shape) expects \(w.shape[1]) input channels, input \(input.shape) has \(channels)")
    precondition(stride.height >= 1 && stride.width >= 1 && padding.height >= 0 && padding.width >= 0,
                 "conv2d: stride \(stride) must be >= 1 and padding \(padding) >= 0")
    let outH = (height + 2 * padding.height - kernelH) / stride.height + 1
    let outW = (width + 2 * padding.width - kernelW) / stride.width + 1
    precondition(height + 2 * padding.height >= kernelH && width + 2 * padding.width >= kernelW && outH > 0 && outW > 0,
                 "conv2d: kernel \(weight.shape) larger than padded input \(input.shape) (padding \(padding))")
    let b = bias?.contiguousCompute(T.self)
    if let b { precondition(b.shape == [outChannels], "conv2d: bias \(b.shape) does not match \(outChannels) output channels") }
    let outShape = [batch, outChannels, outH, outW]
    // No input channels: every sum is empty, so the output is 0 (+ bias).
    let out = channels == 0 ? Tensor(zeros: outShape, dtype: T.dtype) : Tensor(uninitialized: outShape, dtype: T.dtype)
    if out.count == 0 { return unbatched ? out.squeezed(0) : out }
    if channels > 0 { BLAS.require() }

    withExtendedLifetime((x, w, b)) {
        let px = UnsafePointer(x.typedBase(T.self)), pw = UnsafePointer(w.typedBase(T.self))
        let po = out.typedBase(T.self)
        let planeIn = channels * height * width, planeOut = outChannels * outH * outW
        let pointwise = kernelH == 1 && kernelW == 1 && stride == (1, 1) && padding == (0, 0)
        if channels > 0 && pointwise {
            // 1×1: out[n] = W[O, C] · X[n][C, H·W], no unfolding at all.
            for n in 0..<batch {
                T.gemm(transA: false, transB: false, m: outChannels, n: height * width, k: channels, alpha: 1,
                       a: pw, lda: channels, b: px + n * planeIn, ldb: height * width,
                       beta: 0, c: po + n * planeOut, ldc: height * width)
            }
        } else if channels > 0 {
            let depth = channels * kernelH * kernelW
            // Output rows per block, so that the [depth, rows·outW] buffer fits the budget.
            let rowsPerBlock = Swift.max(1, Swift.min(outH, blockElements / Swift.max(1, depth * outW)))
            let columns = UnsafeMutablePointer<T>.allocate(capacity: depth * rowsPerBlock * outW)
            defer { columns.deallocate() }
            let geometry = Im2col(channels: channels, height: height, width: width, kernelH: kernelH,
                                  kernelW: kernelW, strideH: stride.height, strideW: stride.width,
                                  padH: padding.height, padW: padding.width, outW: outW)
            for n in 0..<batch {
                var row0 = 0
                while row0 < outH {
                    let rows = Swift.min(rowsPerBlock, outH - row0)
                    geometry.unfold(px + n * planeIn, firstRow: row0, rows: rows, into: columns)
                    // out[n][:, row0·outW ..< (row0 + rows)·outW] = W[O, depth] · columns[depth, rows·outW]
                    T.gemm(transA: false, transB: false, m: outChannels, n: rows * outW, k: depth, alpha: 1,
                           a: pw, lda: depth, b: columns, ldb: rows * outW,
                           beta: 0, c: po + n * planeOut + row0 * outW, ldc: outH * outW)
                    row0 += rows
                }
            }
        }
        if let b {
            let pb = UnsafePointer(b.typedBase(T.self)), plane = outH * outW
            Parallel.forChunks(batch * outChannels, cost: plane) { range in
                for image in range {
                    let value = pb[image % outChannels], dst = po + image * plane
                    for i in 0..<plane { dst[i] += value }
                }
            }
        }
    }
    return unbatched ? out.squeezed(0) : out
}

/// The unfolding of one CHW image into im2col columns: row `(c, ki, kj)` of the buffer holds,
/// for each output position `(oh, ow)`, the input at `(c, oh·sh − ph + ki, ow·sw − pw + kj)`
/// or 0 where that falls in the padding.
struct Im2col {
    let channels, height, width, kernelH, kernelW, strideH, strideW, padH, padW, outW: Int

    /// Writes rows `[depth, rows·outW]` for output rows `firstRow ..< firstRow + rows`.
    func unfold<T: ComputeScalar>(_ image: UnsafePointer<T>, firstRow: Int, rows: Int, into columns: UnsafeMutablePointer<T>) {
        let depth = channels * kernelH * kernelW, blockWidth = rows * outW
        Parallel.forChunks(depth, cost: blockWidth) { range in
            for r in range {
                let c = r / (kernelH * kernelW), ki = (r / kernelW) % kernelH, kj = r % kernelW
                // Output columns whose input column ow·sw − pw + kj lies inside [0, width).
                let first = Swift.min(outW, kj >= padW ? 0 : (padW - kj + strideW - 1) / strideW)
                let lastInput = width - 1 + padW - kj
                let end = lastInput < 0 ? 0 : Swift.max(first, Swift.min(outW, lastInput / strideW + 1))
                for t in 0..<rows {
                    let dst = columns + r * blockWidth + t * outW
                    let ih = (firstRow + t) * strideH - padH + ki
                    if ih < 0 || ih >= height {
                        dst.update(repeating: 0, count: outW)
                        continue
                    }
                    // Input row ih; output column ow reads its element ow·sw − pw + kj (>= 0 from `first` on).
                    let inputRow = image + (c * height + ih) * width, shift = kj - padW
                    dst.update(repeating: 0, count: first)
                    if end > first {
                        if strideW == 1 {
                            (dst + first).update(from: inputRow + (first + shift), count: end - first)
                        } else {
                            for ow in first..<end { dst[ow] = inputRow[ow * strideW + shift] }
                        }
                    }
                    (dst + end).update(repeating: 0, count: outW - end)
                }
            }
        }
    }
}
