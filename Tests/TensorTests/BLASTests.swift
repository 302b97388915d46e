import Testing
@testable import Tensor

@Test func blasLoads() throws {
    try BLAS.ensureLoaded()
    #expect(!BLAS.coreName.isEmpty)
}
