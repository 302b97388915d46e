import Dispatch
import Foundation

/// Splits work over the machine's cores when it is large enough to pay for it.
public enum Parallel {
    /// Cores available to this process.
    public static let coreCount = max(1, ProcessInfo.processInfo.activeProcessorCount)

    /// Below this many elements of simple elementwise work, one thread is faster than
    /// waking another (measured: the handoff costs ~10-20 µs; 256 Ki floats take ~30 µs).
    public static let elementwiseThreshold = 1 << 18

    /// Calls `body(range)` over disjoint chunks covering `0..<count`, on all cores when
    /// `count` (scaled by `cost`, elements' relative work) reaches the threshold, else inline.
    public static func forChunks(_ count: Int, cost: Int = 1, _ body: (Range<Int>) -> Void) {
        let chunks = count * cost >= elementwiseThreshold ? min(coreCount, count) : 1
        if chunks <= 1 {
            if count > 0 { body(0..<count) }
            return
        }
        let per = (count + chunks - 1) / chunks
        DispatchQueue.concurrentPerform(iterations: chunks) { c in
            let lo = c * per, hi = min(count, lo + per)
            if lo < hi { body(lo..<hi) }
        }
    }
}
