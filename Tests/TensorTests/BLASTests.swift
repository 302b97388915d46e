// Tests of the BLAS loader (blas_loader.c): which OpenBLAS kernel set we request for a CPU,
// that OpenBLAS runs it (or the one the user asked for), its thread count, and SGEMM/DGEMM
// results against naive loops.
import CKernels
import Foundation
import Testing
@testable import Tensor

// MARK: - Kernel set choice

/// A feature set for a CPU we may not have, built from the flags that matter to the chooser.
private func cpu(intel: Bool = false, amd: Bool = false, family: Int32, model: Int32,
                 _ flags: [WritableKeyPath<ah_cpu_features, Int32>]) -> ah_cpu_features {
    var f = ah_cpu_features()
    f.vendor_intel = intel ? 1 : 0
    f.vendor_amd = amd ? 1 : 0
    f.family = family
    f.model = model
    for flag in flags { f[keyPath: flag] = 1 }
    return f
}

private let avx2Set: [WritableKeyPath<ah_cpu_features, Int32>] = [\.sse41, \.avx, \.avx2, \.fma, \.f16c]
private let avx512Set: [WritableKeyPath<ah_cpu_features, Int32>] =
    avx2Set + [\.avx512f, \.avx512cd, \.avx512bw, \.avx512dq, \.avx512vl]

@Suite("OpenBLAS kernel set choice")
struct BLASCoreChoiceTests {
    struct Case: CustomTestStringConvertible, Sendable {
        let name: String
        let features: ah_cpu_features
        let expected: String?
        var testDescription: String { name }
    }

    static let cases: [Case] = [
        Case(name: "Skylake-SP", features: cpu(intel: true, family: 6, model: 0x55, avx512Set), expected: "SkylakeX"),
        Case(name: "Sapphire Rapids", features: cpu(intel: true, family: 6, model: 0x8F, avx512Set + [\.avx512_bf16]),
             expected: "SkylakeX"),
        Case(name: "Zen 4 (AVX-512)", features: cpu(amd: true, family: 25, model: 0x11, avx512Set + [\.avx512_bf16]),
             expected: "SkylakeX"),
        Case(name: "Zen 3 (AVX2)", features: cpu(amd: true, family: 25, model: 0x01, avx2Set), expected: "Zen"),
        Case(name: "Zen 2 (AVX2)", features: cpu(amd: true, family: 23, model: 0x31, avx2Set), expected: "Zen"),
        Case(name: "Haswell", features: cpu(intel: true, family: 6, model: 0x3C, avx2Set), expected: "Haswell"),
        Case(name: "Alder Lake (AVX2, no AVX-512)", features: cpu(intel: true, family: 6, model: 0x97, avx2Set),
             expected: "Haswell"),
        Case(name: "Sandy Bridge (AVX only)", features: cpu(intel: true, family: 6, model: 0x2A, [\.sse41, \.avx]),
             expected: nil),
        Case(name: "AVX2 without FMA", features: cpu(intel: true, family: 6, model: 0x3C, [\.sse41, \.avx, \.avx2]),
             expected: nil),
        Case(name: "no features", features: cpu(family: 0, model: 0, []), expected: nil),
    ]

    @Test(arguments: cases)
    func chooserPicksKernelSet(_ c: Case) {
        #expect(BLAS.chooseCoreType(for: c.features) == c.expected, "\(c.name)")
    }

    @Test func knightsLandingIsNotSkylakeX() {
        // AVX-512 F and CD (plus ER/PF) but no BW/DQ/VL: SkylakeX kernels would fault.
        let knl = cpu(intel: true, family: 6, model: 0x57, avx2Set + [\.avx512f, \.avx512cd])
        let choice = BLAS.chooseCoreType(for: knl)
        #expect(choice != "SkylakeX")
        #expect(choice == "Haswell")
        // Each missing AVX-512 subset alone also keeps SkylakeX out.
        for missing: WritableKeyPath<ah_cpu_features, Int32> in [\.avx512bw, \.avx512vl, \.avx512dq, \.avx512cd] {
            var f = cpu(intel: true, family: 6, model: 0x55, avx512Set)
            f[keyPath: missing] = 0
            #expect(BLAS.chooseCoreType(for: f) == "Haswell", "AVX-512 without \(missing)")
        }
    }
}

// MARK: - The library on this machine

@Suite("OpenBLAS on this machine")
struct BLASLoadedTests {
    @Test func requestedKernelSetIsTheChoiceAndOpenBLASRunsIt() throws {
        try BLAS.ensureLoaded()
        let environment = ProcessInfo.processInfo.environment["OPENBLAS_CORETYPE"]
        if BLAS.coreTypeFromEnvironment {
            // The user's setting wins; we only pass it on.
            #expect(BLAS.requestedCoreType == environment)
        } else {
            #expect(BLAS.requestedCoreType == BLAS.chooseCoreType(for: CPU.features))
            // Having chosen, the loader exported the choice for OpenBLAS's constructor.
            #expect(environment == BLAS.requestedCoreType)
        }
        if let requested = BLAS.requestedCoreType {
            #expect(BLAS.coreName.lowercased() == requested.lowercased(),
                    "asked OpenBLAS for \(requested), it runs \(BLAS.coreName)")
        } else {
            #expect(!BLAS.coreName.isEmpty)
        }
    }

    @Test func threadCountIsTheCoreCount() throws {
        try BLAS.ensureLoaded()
        let environment = ProcessInfo.processInfo.environment
        if let fixed = environment["OPENBLAS_NUM_THREADS"] ?? environment["OMP_NUM_THREADS"], let n = Int(fixed) {
            #expect(BLAS.threadCount == min(n, Parallel.coreCount))
        } else {
            #expect(BLAS.threadCount == Parallel.coreCount)
        }
    }
}

// MARK: - OPENBLAS_CORETYPE in a fresh process

/// What `adapterhost-bench blas-info` prints.
struct BLASInfo: Decodable {
    let core: String
    let requested: String?
    let fromEnv: Bool
    let threads: Int
    let cores: Int
}

/// The benchmark executable built next to this test binary (SwiftPM puts every product of a
/// build in one directory), or the path in ADAPTERHOST_BENCH when set.
func benchExecutable() -> URL {
    if let explicit = ProcessInfo.processInfo.environment["ADAPTERHOST_BENCH"] {
        return URL(fileURLWithPath: explicit)
    }
    // /proc/self/exe is the test runner binary (…/debug/AdapterHostPackageTests.xctest).
    let runner = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
    return runner.deletingLastPathComponent().appendingPathComponent("adapterhost-bench")
}

/// Runs `adapterhost-bench blas-info --json` with `OPENBLAS_CORETYPE` set to `coreType`
/// (removed when nil) and thread-count variables removed, and decodes its JSON.
func runBLASInfo(coreType: String?) throws -> BLASInfo {
    let executable = benchExecutable()
    try #require(FileManager.default.isExecutableFile(atPath: executable.path),
                 "\(executable.path) not built (swift build builds it with the tests)")
    var environment = ProcessInfo.processInfo.environment
    // Our own loader may have exported OPENBLAS_CORETYPE into this process already.
    environment["OPENBLAS_CORETYPE"] = coreType
    for variable in ["OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "GOTO_NUM_THREADS"] {
        environment[variable] = nil
    }
    let process = Process()
    process.executableURL = executable
    process.arguments = ["blas-info", "--json"]
    process.environment = environment
    let output = Pipe()
    process.standardOutput = output
    try process.run()
    let data = output.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    #expect(process.terminationStatus == 0, "blas-info exited with \(process.terminationStatus)")
    return try JSONDecoder().decode(BLASInfo.self, from: data)
}

@Suite("OPENBLAS_CORETYPE from the environment")
struct BLASEnvironmentTests {
    @Test func userSettingIsRespected() throws {
        let info = try runBLASInfo(coreType: "Haswell")
        #expect(info.fromEnv)
        #expect(info.requested == "Haswell")
        #expect(info.core.lowercased() == "haswell", "OpenBLAS runs \(info.core)")
    }

    @Test func withoutUserSettingOurChoiceRuns() throws {
        let info = try runBLASInfo(coreType: nil)
        #expect(!info.fromEnv)
        let choice = BLAS.chooseCoreType(for: CPU.features)
        #expect(info.requested == choice)
        if let choice { #expect(info.core.lowercased() == choice.lowercased(), "OpenBLAS runs \(info.core)") }
        #expect(info.threads == info.cores, "OpenBLAS uses \(info.threads) threads on \(info.cores) cores")
        #expect(info.cores == Parallel.coreCount)
    }
}

// MARK: - GEMM against naive loops

/// C = alpha·op(A)·op(B) + beta·C in Double by the definition, plus the bound on F32 rounding
/// error for each element: k·ε·(|alpha|·Σ|a||b|) + ε·|beta·c| (a standard dot-product bound,
/// doubled for slack).
private func naiveGEMM(transA: Bool, transB: Bool, m: Int, n: Int, k: Int, alpha: Double,
                       a: [Float], lda: Int, b: [Float], ldb: Int, beta: Double, c: [Float], ldc: Int)
    -> (values: [Double], bounds: [Double]) {
    var values = [Double](repeating: 0, count: m * n), bounds = values
    let eps = Double(Float.ulpOfOne)
    a.withUnsafeBufferPointer { a in
        b.withUnsafeBufferPointer { b in
            for i in 0..<m {
                for j in 0..<n {
                    var sum = 0.0, magnitude = 0.0
                    for p in 0..<k {
                        let x = Double(transA ? a[p * lda + i] : a[i * lda + p])
                        let y = Double(transB ? b[j * ldb + p] : b[p * ldb + j])
                        sum += x * y
                        magnitude += abs(x * y)
                    }
                    let c0 = Double(c[i * ldc + j])
                    values[i * n + j] = alpha * sum + beta * c0
                    bounds[i * n + j] = 2 * (Double(k + 2) * eps * abs(alpha) * magnitude + 2 * eps * abs(beta * c0))
                        + Double(Float.leastNormalMagnitude)
                }
            }
        }
    }
    return (values, bounds)
}

@Suite("SGEMM and DGEMM against naive loops")
struct GEMMTests {
    /// (m, n, k): ones, primes, odd sizes around OpenBLAS's blocking, and up to 300.
    static let shapes: [(Int, Int, Int)] = [
        (1, 1, 1), (1, 7, 3), (5, 1, 9), (2, 3, 1), (17, 31, 13), (64, 64, 64), (127, 129, 65),
        (255, 2, 300), (3, 299, 257), (300, 257, 31), (97, 301, 101),
    ]

    @Test(arguments: [false, true], [false, true])
    func sgemmMatchesNaiveLoops(transA: Bool, transB: Bool) throws {
        try BLAS.ensureLoaded()
        var rng = SplitMix64(seed: 7)
        func random(_ count: Int) -> [Float] {
            (0..<count).map { _ in Float(Int64(bitPattern: rng.next() % 2001) - 1000) / 1000 }
        }
        for (m, n, k) in Self.shapes {
            // Stored shapes of A and B follow the transposes; leading dimensions are padded
            // by 3 so that a kernel ignoring lda/ldb reads wrong elements.
            let (aRows, aCols) = transA ? (k, m) : (m, k)
            let (bRows, bCols) = transB ? (n, k) : (k, n)
            let lda = aCols + 3, ldb = bCols + 3, ldc = n + 2
            let a = random(aRows * lda), b = random(bRows * ldb)
            var c = random(m * ldc)
            let alpha: Float = 1.25, beta: Float = -0.5
            let (want, bounds) = naiveGEMM(transA: transA, transB: transB, m: m, n: n, k: k,
                                           alpha: Double(alpha), a: a, lda: lda, b: b, ldb: ldb,
                                           beta: Double(beta), c: c, ldc: ldc)
            /// The columns n..<ldc of every row of C, which GEMM must leave alone.
            func paddingColumns(_ c: [Float]) -> [Float] {
                var columns: [Float] = []
                for i in 0..<m { columns += c[(i * ldc + n)..<(i * ldc + ldc)] }
                return columns
            }
            let padding = paddingColumns(c)
            ah_sgemm(transA ? 1 : 0, transB ? 1 : 0, Int32(m), Int32(n), Int32(k), alpha,
                     a, Int32(lda), b, Int32(ldb), beta, &c, Int32(ldc))
            var worst = 0.0, failures = 0
            for i in 0..<m {
                for j in 0..<n {
                    let error = abs(Double(c[i * ldc + j]) - want[i * n + j])
                    if error > bounds[i * n + j] { failures += 1 }
                    worst = max(worst, error / bounds[i * n + j])
                }
            }
            #expect(failures == 0, "sgemm \(m)x\(n)x\(k) transA=\(transA) transB=\(transB): \(failures) elements beyond the error bound (worst \(worst)x)")
            let paddingAfter = paddingColumns(c)
            #expect(paddingAfter == padding,
                    "sgemm \(m)x\(n)x\(k) wrote into C's padding columns")
        }
    }

    @Test func dgemmMatchesNaiveLoops() throws {
        try BLAS.ensureLoaded()
        let (m, n, k) = (37, 23, 129)
        var rng = SplitMix64(seed: 9)
        let a = (0..<(k * m)).map { _ in Double(rng.next() % 1000) / 997 }  // stored k×m: op(A) = Aᵀ
        let b = (0..<(k * n)).map { _ in Double(rng.next() % 1000) / 991 }
        var c = [Double](repeating: 1, count: m * n)
        ah_dgemm(1, 0, Int32(m), Int32(n), Int32(k), 2, a, Int32(m), b, Int32(n), 3, &c, Int32(n))
        var worst = 0.0
        for i in 0..<m {
            for j in 0..<n {
                var sum = 0.0
                for p in 0..<k { sum += a[p * m + i] * b[p * n + j] }
                worst = max(worst, abs(c[i * n + j] - (2 * sum + 3)))
            }
        }
        #expect(worst < 1e-11, "dgemm differs from the naive loop by \(worst)")
    }
}
