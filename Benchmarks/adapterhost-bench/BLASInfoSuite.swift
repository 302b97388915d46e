import Foundation
import Tensor

/// `blas-info`: which OpenBLAS kernel set runs and why. Used by the tests (BLASTests) to check
/// in a fresh process that a user's OPENBLAS_CORETYPE wins over our choice, which a test
/// process cannot check on itself (the library loads once per process).
struct BLASInfoReport: Encodable {
    /// OpenBLAS's name for the kernels it runs.
    let core: String
    /// What we asked OpenBLAS for (the user's value when `fromEnv`), nil when left to OpenBLAS.
    let requested: String?
    /// True when OPENBLAS_CORETYPE was set before we loaded the library.
    let fromEnv: Bool
    /// OpenBLAS's thread count.
    let threads: Int
    /// Cores available to this process.
    let cores: Int
    /// Our choice for this CPU, whatever the environment says.
    let ourChoice: String?
    /// The conversion kernels in force.
    let dispatchLevel: String
}

func runBLASInfo(json: Bool) throws {
    try BLAS.ensureLoaded()
    let report = BLASInfoReport(core: BLAS.coreName, requested: BLAS.requestedCoreType,
                                fromEnv: BLAS.coreTypeFromEnvironment, threads: BLAS.threadCount,
                                cores: Parallel.coreCount, ourChoice: BLAS.chooseCoreType(for: CPU.features),
                                dispatchLevel: "\(CPU.level)")
    if json {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        print(String(decoding: try encoder.encode(report), as: UTF8.self))
    } else {
        print("OpenBLAS core \(report.core); requested \(report.requested ?? "nothing") (\(report.fromEnv ? "from OPENBLAS_CORETYPE" : "our choice")); \(report.threads) threads on \(report.cores) cores; conversions at \(report.dispatchLevel)")
    }
}
