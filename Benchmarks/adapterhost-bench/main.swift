import Tensor
print("adapterhost: BLAS core \(BLAS.coreName)")
