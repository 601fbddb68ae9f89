"""Hand-written GPU kernels (Triton). Nothing here is imported by `import harness`.

  cross_entropy   one-launch fused cross-entropy: per-row loss and the scaled gradient

Each kernel module imports `triton` at its top, so it is imported only where it is used
(`harness.variants.triton_fused` imports it inside the call). Under `TRITON_INTERPRET=1`,
set before the kernel module is first imported, the same kernels run on CPU tensors through
Triton's interpreter: that is how the tests check them on a machine without a GPU.
"""
