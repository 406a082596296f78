package tokenizer_test

import (
	"fmt"
	"log"

	"github.com/ddpm-go/ddpm/tokenizer"
)

// Encode a GLIDE prompt and pad it to the model's text context, as
// glide-text2im's sampling code does before calling the model.
func Example() {
	bpe, err := tokenizer.NewGLIDE()
	if err != nil {
		log.Fatal(err)
	}
	ids := bpe.Encode("A blue bird in the snow")
	fmt.Println(ids)
	tokens, mask := tokenizer.PaddedTokensAndMask(ids, 10)
	fmt.Println(tokens)
	fmt.Println(mask)
	// The empty prompt is the unconditional input of classifier-free guidance.
	uncond, _ := bpe.EncodePadded("", 4)
	fmt.Println(uncond)
	// Output:
	// [64 4171 6512 287 262 6729]
	// [64 4171 6512 287 262 6729 50256 50256 50256 50256]
	// [true true true true true true false false false false]
	// [50256 50256 50256 50256]
}
