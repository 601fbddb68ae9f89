"""The loss core the families share: what every loss family reads, and nothing family-shaped.

  declared   each loss option once, as data: its setting, default, allowed values, the keyword
             argument a variant declares to honour it, what it does to the float64 reference,
             and which families read it. The schema, the rows' columns and the checks of a
             point are made from these declarations.
  settings   reading and checking the settings every family has (scales, seeds, sizes), the
             scan of one job's points, and the refusal of a setting the chosen family does not
             read.
  options    LossOptions: the options of one call, as the float64 references, the kernels and
             the variants take them (`Keywords`: a variant's keyword arguments).
  composed   the options composed around F.cross_entropy as eager training code does, which
             each family's composed variant measures on its own logits.
  point      the methods every family's Point shares: its option values, as row columns, as the
             keyword arguments a variant receives, and those a variant must honour.
  weights    the seeded class weights and the option draws' random streams.
  errors     relative errors and the incoming gradient of a per-row loss.
  returned   what a variant returned, checked against its reduction (BadResult).
  verdict    a row's status from its errors and bounds (unjudged where a bound is vacuous).

Families (harness/cross_entropy/, harness/linear_cross_entropy/) import this package and
harness/kernel/; never each other.
"""
