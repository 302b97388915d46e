#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation
import Tensor

/// One measured figure. `name` is shared with tools/bench_peers.py so the two sides can be
/// paired by name; `better` says which direction is an improvement.
struct Measurement: Encodable {
    let name: String
    let value: Double
    let unit: String
    let better: Direction
    /// Best wall time of one repetition, in seconds.
    let bestSeconds: Double
    /// Slowest of the timed runs divided by the best: how noisy the machine was.
    let spread: Double
    let note: String

    enum Direction: String, Encodable { case higher, lower }
}

/// The output of a suite: its figures plus what the run was done on.
struct SuiteReport: Encodable {
    let suite: String
    let side = "adapterhost"
    let machine: MachineInfo
    let results: [Measurement]
}

/// The machine and libraries, recorded with every report.
struct MachineInfo: Encodable {
    let cores: Int
    let blasCore: String
    let blasThreads: Int
    let dispatchLevel: String

    static func current() -> MachineInfo {
        let loaded = (try? BLAS.ensureLoaded()) != nil
        return MachineInfo(cores: Parallel.coreCount, blasCore: loaded ? BLAS.coreName : "unavailable",
                           blasThreads: loaded ? BLAS.threadCount : 0, dispatchLevel: "\(CPU.level)")
    }
}

/// Monotonic wall clock in seconds.
func now() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
}

/// Times `body`: `warmup` untimed calls, then `runs` timed runs of `repetitions` calls each.
/// Returns the best and worst per-call time over the runs. Best-of is the least noisy
/// estimate on a shared machine: interference only ever adds time.
func timeBest(warmup: Int = 1, runs: Int, repetitions: Int = 1, _ body: () -> Void) -> (best: Double, worst: Double) {
    for _ in 0..<warmup { body() }
    var best = Double.infinity, worst = 0.0
    for _ in 0..<runs {
        let start = now()
        for _ in 0..<repetitions { body() }
        let perCall = (now() - start) / Double(repetitions)
        best = min(best, perCall)
        worst = max(worst, perCall)
    }
    return (best, worst)
}

/// How many calls of a body taking `seconds` make a run of at least `target` seconds.
func repetitions(forCallTaking seconds: Double, target: Double = 0.2) -> Int {
    max(1, Int((target / max(seconds, 1e-9)).rounded(.up)))
}

/// Keeps a value alive and opaque to the optimizer, so measured work is not removed.
@inline(never)
func blackHole<T>(_ value: T) { withExtendedLifetime(value) {} }

/// Prints a suite's results as JSON (`--json`) or as aligned text.
func emit(_ report: SuiteReport, json: Bool) {
    if json {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        let data = try! encoder.encode(report) // Measurement holds only strings and finite numbers
        print(String(decoding: data, as: UTF8.self))
        return
    }
    print("suite \(report.suite): \(report.machine.cores) cores, OpenBLAS \(report.machine.blasCore) × \(report.machine.blasThreads) threads, conversions at \(report.machine.dispatchLevel)")
    for m in report.results {
        let value = String(format: "%10.3f", m.value)
        let spread = String(format: "%.2f", m.spread)
        print("  \(m.name.padding(toLength: 24, withPad: " ", startingAt: 0)) \(value) \(m.unit.padding(toLength: 10, withPad: " ", startingAt: 0)) (worst/best \(spread)) \(m.note)")
    }
}

/// Deterministic pseudo-random numbers (SplitMix64) for benchmark inputs.
struct BenchRandom {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    /// Uniform in [-1, 1).
    mutating func nextFloat() -> Float { Float(next() >> 40) / Float(1 << 23) - 1 }
}
