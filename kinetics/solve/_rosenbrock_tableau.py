"""Rodas5P Rosenbrock-Wanner tableau (transformed / "W-form" coefficients).

Method
------
Rodas5P: 8-stage, order 5(4), stiffly accurate, L-stable Rosenbrock-Wanner
method with a 4th-order ("stiff-aware") continuous extension (dense output).

    G. Steinebach, "Construction of Rosenbrock-Wanner method Rodas5P and
    numerical benchmarks within the Julia Differential Equations package",
    BIT Numerical Mathematics 63, article 27 (2023).
    DOI: 10.1007/s10543-023-00967-x

Where the numbers were read
---------------------------
The constants below were transcribed (digit for digit) from the
``Rodas5PTableau`` function of SciML/OrdinaryDiffEq.jl,
``lib/OrdinaryDiffEqRosenbrock/src/rosenbrock_tableaus.jl`` (MIT licence;
read at commits 1d7f56b77b48ca703d2459d54ff9b93a07a1ca2a and
0054db222947316756de39bc6c04566678d3f899, and cross-checked against an older
revision that stores the same values as scalars a21..a65, C21..C87, d1..d5,
c2..c5, h21..h48).  The step algorithm was read from the generic
``perform_step!`` for ``RosenbrockCache`` / ``RosenbrockCombinedConstantCache``
in ``rosenbrock_perform_step.jl`` and the dense output from
``_ode_interpolant`` in ``rosenbrock_interpolants.jl`` (same package).  Only
numeric facts were taken; the formulas below are restated independently.

Every literal below is the shortest round-trip ``repr`` of the IEEE double
obtained from the published decimal string (the published strings already are
shortest round-trip representations, so they are reproduced unchanged).

Independent verification (see ``tests/solve/test_rosenbrock_tableau.py``):
converting back to the classical (alpha, Gamma, b) form, all 17 Rosenbrock
order conditions up to order 5 hold for ``b`` to ~1e-14, all 8 conditions up
to order 4 hold for the embedded weights, all conditions up to order 4 hold
for the dense output at every theta, c = row sums of alpha and d = row sums of
Gamma; R(z) -> 0 as z -> -inf (L-stable).

Step algorithm (exact form of the source, identity mass matrix)
---------------------------------------------------------------
Notation: step from (t, y) with step size h; f(t, y) right-hand side;
J = df/dy(t, y); dT = df/dt(t, y) (both evaluated ONCE, at the start of the
step, at (t, y)); s = NSTAGES = 8; indices are 0-based as in the tuples below.

    W = I/(h*GAMMA) - J                       # one LU per step

    for i in 0 .. s-1:
        u_i = y + sum_{j<i} A[i][j] * k_j                  # (u_0 = y)
        r_i = f(t + C_NODES[i]*h, u_i)
              + sum_{j<i} (C[i][j] / h) * k_j
              + D[i] * h * dT
        k_i = W^{-1} r_i                                   # i.e. solve W k_i = r_i

    y_{n+1} = u_{s-1} + k_{s-1}
            = y + sum_{j<s-1} A[s-1][j] k_j + k_{s-1}
            = y + sum_j B[j] k_j         (B = A[s-1] with B[s-1] = 1)

  Equivalently (this is literally what OrdinaryDiffEq.jl does): its W is
  J - I/(h*GAMMA) and k_i = W_jl \\ (-r_i); identical to the above.
  With a constant mass matrix M: W = M/(h*GAMMA) - J and the C-sum term is
  M @ (sum_j (C[i][j]/h) k_j); nothing else changes.
  Note rows 5, 6, 7 of A make u_6 = u_5 + k_5 and u_7 = u_6 + k_6 (the method
  is stiffly accurate; C_NODES[5:] == 1).

Embedded solution / error estimate:
    yhat_{n+1} = u_{s-1} = y_{n+1} - k_{s-1}     (order 4)
    err        = y_{n+1} - yhat_{n+1} = k_{s-1}  (BTILDE = e_{s-1})
  scaled in the usual way, e.g. ||err_i / (atol + rtol*max(|y_i|,|y_{n+1,i}|))||.

Dense output (order 4), theta in [0, 1], t + theta*h:
    K_r = sum_j H[r][j] * k_j          for r = 0, 1, 2
    y(t + theta*h) = (1 - theta) * y_n
                     + theta * ( y_{n+1}
                                 + (1 - theta) * ( K_0
                                                   + theta * ( K_1 + theta * K_2 ) ) )
  (no factor h: the k_j are already increments of size O(h)).
  Derivative:  h * y'(t + theta*h) = y_{n+1} - y_n + K_0
               + theta*(-2K_0 + 2K_1) + theta^2*(-3K_1 + 3K_2) - 4 theta^3 K_2.

Relation to the classical Rosenbrock form (alpha, Gamma, b) of Hairer-Wanner:
    Gamma^{-1} = I/GAMMA - C,   alpha = A @ Gamma,   b = B @ Gamma,
    C_NODES[i] = sum_j alpha[i][j],   D[i] = sum_j Gamma[i][j].
"""

NAME = "Rodas5P"
NSTAGES = 8
ORDER = 5            # order of y_{n+1}
EMBEDDED_ORDER = 4   # order of yhat_{n+1} = y_{n+1} - k_{s-1}
DENSE_ORDER = 4      # order of the continuous extension

# Diagonal coefficient gamma (W = I/(h*GAMMA) - J).
GAMMA = 0.21193756319429014

# Transformed stage coefficients a_ij (strictly lower triangular, 8x8).
A = (
    (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0),
    (3.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0),
    (2.849394379747939, 0.45842242204463923, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0),
    (-6.954028509809101, 2.489845061869568, -10.358996098473584,
     0.0, 0.0, 0.0, 0.0, 0.0),
    (2.8029986275628964, 0.5072464736228206, -0.3988312541770524,
     -0.04721187230404641, 0.0, 0.0, 0.0, 0.0),
    (-7.502846399306121, 2.561846144803919, -11.627539656261098,
     -0.18268767659942256, 0.030198172008377946, 0.0, 0.0, 0.0),
    (-7.502846399306121, 2.561846144803919, -11.627539656261098,
     -0.18268767659942256, 0.030198172008377946, 1.0, 0.0, 0.0),
    (-7.502846399306121, 2.561846144803919, -11.627539656261098,
     -0.18268767659942256, 0.030198172008377946, 1.0, 1.0, 0.0),
)

# Transformed coupling coefficients C_ij (strictly lower triangular, 8x8);
# they enter r_i as + (C[i][j]/h) * k_j.  (The source stores 8x7; the last
# column here is identically zero.)
C = (
    (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0),
    (-14.155112264123755, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0),
    (-17.97296035885952, -2.859693295451294, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0),
    (147.12150275711716, -1.41221402718213, 71.68940251302358,
     0.0, 0.0, 0.0, 0.0, 0.0),
    (165.43517024871676, -0.4592823456491126, 42.90938336958603,
     -5.961986721573306, 0.0, 0.0, 0.0, 0.0),
    (24.854864614690072, -3.0009227002832186, 47.4931110020768,
     5.5814197821558125, -0.6610691825249471, 0.0, 0.0, 0.0),
    (30.91273214028599, -3.1208243349937974, 77.79954646070892,
     34.28646028294783, -19.097331116725623, -28.087943162872662, 0.0, 0.0),
    (37.80277123390563, -3.2571969029072276, 112.26918849496327,
     66.9347231244047, -40.06618937091002, -54.66780262877968,
     -9.48861652309627, 0.0),
)

# Stage times c_i (stage i evaluates f at t + C_NODES[i]*h).
C_NODES = (
    0.0,
    0.6358126895828704,
    0.4095798393397535,
    0.9769306725060716,
    0.4288403609558664,
    1.0,
    1.0,
    1.0,
)

# Time-derivative coefficients d_i = gamma_i = sum_j Gamma_ij; they enter r_i
# as + D[i] * h * dT with dT = df/dt(t, y).  D[0] == GAMMA.
D = (
    0.21193756319429014,
    -0.42387512638858027,
    -0.3384627126235924,
    1.8046452872882734,
    2.325825639765069,
    0.0,
    0.0,
    0.0,
)

# Dense-output matrix (3 x 8): K_r = sum_j H[r][j] * k_j.
H = (
    (25.948786856663858, -2.5579724845846235, 10.433815404888879,
     -2.3679251022685204, 0.524948541321073, 1.1241088310450404,
     0.4272876194431874, -0.17202221070155493),
    (-9.91568850695171, -0.9689944594115154, 3.0438037242978453,
     -24.495224566215796, 20.176138334709044, 15.98066361424651,
     -6.789040303419874, -6.710236069923372),
    (11.419903575922262, 2.8879645146136994, 72.92137995996029,
     80.12511834622643, -52.072871366152654, -59.78993625266729,
     -0.15582684282751913, 4.883087185713722),
)

# Derived conveniences (exact, no rounding involved):
# y_{n+1} = y + sum_j B[j] k_j  (B = last row of A, plus 1 on the last stage).
B = A[NSTAGES - 1][:NSTAGES - 1] + (1.0,)
# err = sum_j BTILDE[j] k_j = k_{s-1}.
BTILDE = (0.0,) * (NSTAGES - 1) + (1.0,)
