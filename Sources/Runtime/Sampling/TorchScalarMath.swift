/// `torch.linspace` on the CPU, element for element: `start + step·i` for the first half and
/// `end − step·(n−1−i)` for the rest, each one fused multiply-add (GCC contracts the kernel's
/// `start + step * idx`), with `step = (end − start) / (n − 1)` in the output precision.
enum TorchLinspace {
    static func floats(from start: Float, to end: Float, count: Int) -> [Float] {
        guard count > 1 else { return count == 1 ? [start] : [] }
        let step = (end - start) / Float(count - 1)
        let halfway = count / 2
        return (0..<count).map { i in
            i < halfway ? start.addingProduct(step, Float(i)) : end.addingProduct(-step, Float(count - 1 - i))
        }
    }

    static func doubles(from start: Double, to end: Double, count: Int) -> [Double] {
        guard count > 1 else { return count == 1 ? [start] : [] }
        let step = (end - start) / Double(count - 1)
        let halfway = count / 2
        return (0..<count).map { i in
            i < halfway ? start.addingProduct(step, Double(i)) : end.addingProduct(-step, Double(count - 1 - i))
        }
    }
}
