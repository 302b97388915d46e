#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Wall time per kind of layer step, for benchmarks (`adapterhost-bench unet --profile`).
/// Off by default; when off, each measured step costs one branch. Not thread-safe: enable it
/// only around single-threaded callers of the networks (the networks' own worker threads never
/// record).
public enum NetworkProfiler {
    /// Record timings.
    nonisolated(unsafe) public static var isEnabled = false
    nonisolated(unsafe) private static var totals: [String: (seconds: Double, calls: Int, flops: Double)] = [:]

    /// Clears the totals.
    public static func reset() { totals.removeAll() }

    /// (step, seconds, calls, GFLOP/s when the step reported work), slowest first.
    public static var report: [(step: String, seconds: Double, calls: Int, gflops: Double?)] {
        totals.map { ($0.key, $0.value.seconds, $0.value.calls, $0.value.flops > 0 ? $0.value.flops / $0.value.seconds / 1e9 : nil) }
            .sorted { $0.1 > $1.1 }
    }

    /// Runs `body`, adding its wall time (and `flops` of work) to `step` when enabled.
    @inline(__always)
    static func measure<R>(_ step: @autoclosure () -> String, flops: @autoclosure () -> Double = 0,
                           _ body: () throws -> R) rethrows -> R {
        guard isEnabled else { return try body() }
        let start = clock()
        let result = try body()
        let elapsed = clock() - start
        let key = step()
        let old = totals[key] ?? (0, 0, 0)
        totals[key] = (old.seconds + elapsed, old.calls + 1, old.flops + flops())
        return result
    }

    private static func clock() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
    }
}
