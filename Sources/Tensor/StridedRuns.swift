/// The index space of an elementwise op: a contiguous output over `shape`, and one or two
/// strided inputs (broadcast axes have stride 0), walked as runs along the innermost axis.
///
/// Adjacent axes that every input steps through uniformly are merged first, so a contiguous
/// input, or one broadcast along whole leading axes, becomes a few long runs, and the per-run
/// cost (a few integer ops) is paid rarely; inner loops then see plain pointers and a stride.
struct StridedRuns {
    /// Collapsed shape, rank >= 1.
    let shape: [Int]
    /// Collapsed strides of the first and second input (elements).
    let aStrides: [Int]
    let bStrides: [Int]

    /// Elements in one run (the innermost collapsed axis).
    var runLength: Int { shape[shape.count - 1] }
    /// Stride of each input along a run.
    var aRunStride: Int { aStrides[aStrides.count - 1] }
    var bRunStride: Int { bStrides[bStrides.count - 1] }
    /// Total elements.
    var count: Int { shape.reduce(1, *) }

    /// Collapses `shape` (the output's) with each input's strides; pass zeros for a missing input.
    init(shape: [Int], aStrides: [Int], bStrides: [Int]) {
        precondition(aStrides.count == shape.count && bStrides.count == shape.count)
        var dims: [(size: Int, a: Int, b: Int)] = []
        for d in 0..<shape.count where shape[d] != 1 {
            let next = (size: shape[d], a: aStrides[d], b: bStrides[d])
            if let last = dims.last, last.a == next.a * next.size, last.b == next.b * next.size {
                // The outer axis steps exactly one whole inner axis in both inputs: one axis.
                dims[dims.count - 1] = (last.size * next.size, next.a, next.b)
            } else {
                dims.append(next)
            }
        }
        if dims.isEmpty { dims = [(1, 0, 0)] }
        self.shape = dims.map(\.size)
        self.aStrides = dims.map(\.a)
        self.bStrides = dims.map(\.b)
    }

    /// Calls `body(outIndex, aOffset, bOffset, length)` for consecutive runs that together cover
    /// the flat output indices `range`; offsets are in elements from each input's first element.
    /// A run never crosses the end of the innermost axis.
    func forEachRun(in range: Range<Int>, _ body: (Int, Int, Int, Int) -> Void) {
        if range.isEmpty { return }
        let inner = runLength, outerRank = shape.count - 1
        let aInner = aRunStride, bInner = bRunStride
        // Multi-index of the first run's row, and its input offsets.
        var index = [Int](repeating: 0, count: outerRank)
        var row = range.lowerBound / inner
        var aRow = 0, bRow = 0
        for d in stride(from: outerRank - 1, through: 0, by: -1) {
            index[d] = row % shape[d]
            row /= shape[d]
            aRow += index[d] * aStrides[d]
            bRow += index[d] * bStrides[d]
        }
        var j = range.lowerBound % inner
        var position = range.lowerBound
        while position < range.upperBound {
            let n = Swift.min(inner - j, range.upperBound - position)
            body(position, aRow + j * aInner, bRow + j * bInner, n)
            position += n
            j = 0
            // Next row: increment the outer multi-index, updating offsets incrementally.
            var d = outerRank - 1
            while d >= 0 {
                index[d] += 1
                aRow += aStrides[d]
                bRow += bStrides[d]
                if index[d] < shape[d] { break }
                aRow -= aStrides[d] * shape[d]
                bRow -= bStrides[d] * shape[d]
                index[d] = 0
                d -= 1
            }
        }
    }
}

/// The shape two shapes broadcast to under NumPy rules; stops naming both when they do not.
func broadcastShape(_ a: [Int], _ b: [Int], _ op: String) -> [Int] {
    let rank = Swift.max(a.count, b.count)
    var out = [Int](repeating: 1, count: rank)
    for i in 0..<rank {
        let da = i < rank - a.count ? 1 : a[i - (rank - a.count)]
        let db = i < rank - b.count ? 1 : b[i - (rank - b.count)]
        precondition(da == db || da == 1 || db == 1, "\(op): shapes \(a) and \(b) do not broadcast")
        out[i] = da == 1 ? db : da
    }
    return out
}
