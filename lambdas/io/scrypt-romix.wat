;; scrypt's ROMix (RFC 7914 section 5) with WebAssembly SIMD: the sequential memory-hard part of scrypt, the rest
;; (PBKDF2-HMAC-SHA256 before and after) is node:crypto's. Salsa20/8 on four 128-bit vectors, the layout and
;; shuffles of Colin Percival's crypto_scrypt-sse.c: each 64-byte block holds its words in "diagonal" order
;; (word i of the block is word (5·i mod 16) of RFC 7914's), so a column round and a row round are four vector
;; add-rotate-xor steps each, with lane rotations between them. lambdas/io/scrypt.ts permutes the words in
;; and out. Assembled into lambdas/io/scrypt-romix-wasm.ts by `npm run build:wasm` (test/support/romix-wasm.ts);
;; test/unit/scrypt.test.ts checks the two agree and the result equals OpenSSL's scrypt (RFC 7914's vectors).
(module
  (memory (export "memory") 1)

  ;; BlockMix_salsa20/8 of the 128·r bytes at $bin XOR those at $v (a zero block where there is nothing to mix in),
  ;; into $bout: Y_i = Salsa20/8(Y_(i-1) XOR B_i), even i to the first half of $bout, odd i to the second.
  (func $blockmix (param $bin i32) (param $v i32) (param $bout i32) (param $r i32)
    (local $x0 v128) (local $x1 v128) (local $x2 v128) (local $x3 v128)
    (local $s0 v128) (local $s1 v128) (local $s2 v128) (local $s3 v128)
    (local $t v128) (local $i i32) (local $n i32) (local $last i32) (local $o i32) (local $k i32)
    (local.set $n (i32.shl (local.get $r) (i32.const 1)))
    (local.set $last (i32.shl (i32.sub (local.get $n) (i32.const 1)) (i32.const 6)))
    ;; X = B[2r-1] (^ V[2r-1])
    (local.set $x0 (v128.xor (v128.load offset=0 (i32.add (local.get $bin) (local.get $last))) (v128.load offset=0 (i32.add (local.get $v) (local.get $last)))))
    (local.set $x1 (v128.xor (v128.load offset=16 (i32.add (local.get $bin) (local.get $last))) (v128.load offset=16 (i32.add (local.get $v) (local.get $last)))))
    (local.set $x2 (v128.xor (v128.load offset=32 (i32.add (local.get $bin) (local.get $last))) (v128.load offset=32 (i32.add (local.get $v) (local.get $last)))))
    (local.set $x3 (v128.xor (v128.load offset=48 (i32.add (local.get $bin) (local.get $last))) (v128.load offset=48 (i32.add (local.get $v) (local.get $last)))))
    (local.set $i (i32.const 0))
    (loop $blocks
      (local.set $o (i32.shl (local.get $i) (i32.const 6)))
      (local.set $s0 (v128.xor (local.get $x0) (v128.xor (v128.load offset=0 (i32.add (local.get $bin) (local.get $o))) (v128.load offset=0 (i32.add (local.get $v) (local.get $o))))))
      (local.set $s1 (v128.xor (local.get $x1) (v128.xor (v128.load offset=16 (i32.add (local.get $bin) (local.get $o))) (v128.load offset=16 (i32.add (local.get $v) (local.get $o))))))
      (local.set $s2 (v128.xor (local.get $x2) (v128.xor (v128.load offset=32 (i32.add (local.get $bin) (local.get $o))) (v128.load offset=32 (i32.add (local.get $v) (local.get $o))))))
      (local.set $s3 (v128.xor (local.get $x3) (v128.xor (v128.load offset=48 (i32.add (local.get $bin) (local.get $o))) (v128.load offset=48 (i32.add (local.get $v) (local.get $o))))))
      (local.set $x0 (local.get $s0)) (local.set $x1 (local.get $s1)) (local.set $x2 (local.get $s2)) (local.set $x3 (local.get $s3))
      ;; Salsa20/8: four double rounds, then the input added back.
      (local.set $k (i32.const 4))
      (loop $rounds
        ;; columns
        (local.set $t (i32x4.add (local.get $x0) (local.get $x3)))
        (local.set $x1 (v128.xor (local.get $x1) (v128.xor (i32x4.shl (local.get $t) (i32.const 7)) (i32x4.shr_u (local.get $t) (i32.const 25)))))
        (local.set $t (i32x4.add (local.get $x1) (local.get $x0)))
        (local.set $x2 (v128.xor (local.get $x2) (v128.xor (i32x4.shl (local.get $t) (i32.const 9)) (i32x4.shr_u (local.get $t) (i32.const 23)))))
        (local.set $t (i32x4.add (local.get $x2) (local.get $x1)))
        (local.set $x3 (v128.xor (local.get $x3) (v128.xor (i32x4.shl (local.get $t) (i32.const 13)) (i32x4.shr_u (local.get $t) (i32.const 19)))))
        (local.set $t (i32x4.add (local.get $x3) (local.get $x2)))
        (local.set $x0 (v128.xor (local.get $x0) (v128.xor (i32x4.shl (local.get $t) (i32.const 18)) (i32x4.shr_u (local.get $t) (i32.const 14)))))
        (local.set $x1 (i8x16.shuffle 12 13 14 15 0 1 2 3 4 5 6 7 8 9 10 11 (local.get $x1) (local.get $x1)))
        (local.set $x2 (i8x16.shuffle 8 9 10 11 12 13 14 15 0 1 2 3 4 5 6 7 (local.get $x2) (local.get $x2)))
        (local.set $x3 (i8x16.shuffle 4 5 6 7 8 9 10 11 12 13 14 15 0 1 2 3 (local.get $x3) (local.get $x3)))
        ;; rows
        (local.set $t (i32x4.add (local.get $x0) (local.get $x1)))
        (local.set $x3 (v128.xor (local.get $x3) (v128.xor (i32x4.shl (local.get $t) (i32.const 7)) (i32x4.shr_u (local.get $t) (i32.const 25)))))
        (local.set $t (i32x4.add (local.get $x3) (local.get $x0)))
        (local.set $x2 (v128.xor (local.get $x2) (v128.xor (i32x4.shl (local.get $t) (i32.const 9)) (i32x4.shr_u (local.get $t) (i32.const 23)))))
        (local.set $t (i32x4.add (local.get $x2) (local.get $x3)))
        (local.set $x1 (v128.xor (local.get $x1) (v128.xor (i32x4.shl (local.get $t) (i32.const 13)) (i32x4.shr_u (local.get $t) (i32.const 19)))))
        (local.set $t (i32x4.add (local.get $x1) (local.get $x2)))
        (local.set $x0 (v128.xor (local.get $x0) (v128.xor (i32x4.shl (local.get $t) (i32.const 18)) (i32x4.shr_u (local.get $t) (i32.const 14)))))
        (local.set $x1 (i8x16.shuffle 4 5 6 7 8 9 10 11 12 13 14 15 0 1 2 3 (local.get $x1) (local.get $x1)))
        (local.set $x2 (i8x16.shuffle 8 9 10 11 12 13 14 15 0 1 2 3 4 5 6 7 (local.get $x2) (local.get $x2)))
        (local.set $x3 (i8x16.shuffle 12 13 14 15 0 1 2 3 4 5 6 7 8 9 10 11 (local.get $x3) (local.get $x3)))
        (local.set $k (i32.sub (local.get $k) (i32.const 1)))
        (br_if $rounds (local.get $k)))
      (local.set $x0 (i32x4.add (local.get $x0) (local.get $s0)))
      (local.set $x1 (i32x4.add (local.get $x1) (local.get $s1)))
      (local.set $x2 (i32x4.add (local.get $x2) (local.get $s2)))
      (local.set $x3 (i32x4.add (local.get $x3) (local.get $s3)))
      ;; even i → bout[i/2], odd i → bout[r + i/2]
      (local.set $o (i32.add (local.get $bout)
        (i32.shl (i32.add (i32.shr_u (local.get $i) (i32.const 1)) (i32.mul (i32.and (local.get $i) (i32.const 1)) (local.get $r))) (i32.const 6))))
      (v128.store offset=0 (local.get $o) (local.get $x0))
      (v128.store offset=16 (local.get $o) (local.get $x1))
      (v128.store offset=32 (local.get $o) (local.get $x2))
      (v128.store offset=48 (local.get $o) (local.get $x3))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $blocks (i32.lt_u (local.get $i) (local.get $n)))))

  ;; ROMix of the 128·r-byte block at 0 (words in diagonal order), N a power of two; scratch X at 128r, Y at 256r,
  ;; a zero block at 384r, V from 512r (N·128r bytes). The result replaces the block at 0.
  (func (export "romix") (param $r i32) (param $N i32)
    (local $len i32) (local $x i32) (local $y i32) (local $zero i32) (local $vp i32) (local $i i32) (local $j i32)
    (local.set $len (i32.shl (local.get $r) (i32.const 7)))
    (local.set $x (local.get $len))
    (local.set $y (i32.shl (local.get $len) (i32.const 1)))
    (local.set $zero (i32.mul (local.get $len) (i32.const 3)))
    (local.set $vp (i32.shl (local.get $len) (i32.const 2)))
    (memory.fill (local.get $zero) (i32.const 0) (local.get $len))
    ;; V_0 = B, V_(i+1) = BlockMix(V_i), X = BlockMix(V_(N-1)): written in place, no copies.
    (memory.copy (local.get $vp) (i32.const 0) (local.get $len))
    (local.set $i (i32.const 1))
    (loop $fill
      (call $blockmix (i32.add (local.get $vp) (i32.mul (i32.sub (local.get $i) (i32.const 1)) (local.get $len))) (local.get $zero)
        (i32.add (local.get $vp) (i32.mul (local.get $i) (local.get $len))) (local.get $r))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $fill (i32.lt_u (local.get $i) (local.get $N))))
    (call $blockmix (i32.add (local.get $vp) (i32.mul (i32.sub (local.get $N) (i32.const 1)) (local.get $len))) (local.get $zero) (local.get $x) (local.get $r))
    ;; N times: j = Integerify(X) mod N (the first word of X's last 64-byte block, in either order), X = BlockMix(X XOR V_j).
    (local.set $i (i32.const 0))
    (loop $mix
      (local.set $j (i32.and (i32.load (i32.add (local.get $x) (i32.sub (local.get $len) (i32.const 64)))) (i32.sub (local.get $N) (i32.const 1))))
      (call $blockmix (local.get $x) (i32.add (local.get $vp) (i32.mul (local.get $j) (local.get $len))) (local.get $y) (local.get $r))
      (local.set $j (i32.and (i32.load (i32.add (local.get $y) (i32.sub (local.get $len) (i32.const 64)))) (i32.sub (local.get $N) (i32.const 1))))
      (call $blockmix (local.get $y) (i32.add (local.get $vp) (i32.mul (local.get $j) (local.get $len))) (local.get $x) (local.get $r))
      (local.set $i (i32.add (local.get $i) (i32.const 2)))
      (br_if $mix (i32.lt_u (local.get $i) (local.get $N))))
    (memory.copy (i32.const 0) (local.get $x) (local.get $len)))
)
