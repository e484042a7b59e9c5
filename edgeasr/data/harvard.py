"""Harvard sentences, lists 1-8 (IEEE 1969 "Recommended Practice for Speech Quality Measurements").

Public domain; phonetically balanced, which makes them a fair small prompt set for synthetic speech.
Lists 1-4 are spoken for evaluation (`tts-en`), lists 5-8 only for calibration (`tts-en-calib`), so
calibration never sees an evaluation sentence.
"""

HARVARD_LISTS: tuple[tuple[str, ...], ...] = (
    (
        "The birch canoe slid on the smooth planks.",
        "Glue the sheet to the dark blue background.",
        "It's easy to tell the depth of a well.",
        "These days a chicken leg is a rare dish.",
        "Rice is often served in round bowls.",
        "The juice of lemons makes fine punch.",
        "The box was thrown beside the parked truck.",
        "The hogs were fed chopped corn and garbage.",
        "Four hours of steady work faced us.",
        "A large size in stockings is hard to sell.",
    ),
    (
        "The boy was there when the sun rose.",
        "A rod is used to catch pink salmon.",
        "The source of the huge river is the clear spring.",
        "Kick the ball straight and follow through.",
        "Help the woman get back to her feet.",
        "A pot of tea helps to pass the evening.",
        "Smoky fires lack flame and heat.",
        "The soft cushion broke the man's fall.",
        "The salt breeze came across from the sea.",
        "The girl at the booth sold fifty bonds.",
    ),
    (
        "The small pup gnawed a hole in the sock.",
        "The fish twisted and turned on the bent hook.",
        "Press the pants and sew a button on the vest.",
        "The swan dive was far short of perfect.",
        "The beauty of the view stunned the young boy.",
        "Two blue fish swam in the tank.",
        "Her purse was full of useless trash.",
        "The colt reared and threw the tall rider.",
        "It snowed, rained, and hailed the same morning.",
        "Read verse out loud for pleasure.",
    ),
    (
        "Hoist the load to your left shoulder.",
        "Take the winding path to reach the lake.",
        "Note closely the size of the gas tank.",
        "Wipe the grease off his dirty face.",
        "Mend the coat before you go out.",
        "The wrist was badly strained and hung limp.",
        "The stray cat gave birth to kittens.",
        "The young girl gave no clear response.",
        "The meal was cooked before the bell rang.",
        "What joy there is in living.",
    ),
    (
        "A king ruled the state in the early days.",
        "The ship was torn apart on the sharp reef.",
        "Sickness kept him home the third week.",
        "The wide road shimmered in the hot sun.",
        "The lazy cow lay in the cool grass.",
        "Lift the square stone over the fence.",
        "The rope will bind the seven books at once.",
        "Hop over the fence and plunge in.",
        "The friendly gang left the drug store.",
        "Mesh wire keeps chicks inside.",
    ),
    (
        "The frosty air passed through the coat.",
        "The crooked maze failed to fool the mouse.",
        "Adding fast leads to wrong sums.",
        "The show was a flop from the very start.",
        "A saw is a tool used for making boards.",
        "The wagon moved on well oiled wheels.",
        "March the soldiers past the next hill.",
        "A cup of sugar makes sweet fudge.",
        "Place a rosebush near the porch steps.",
        "Both lost their lives in the raging storm.",
    ),
    (
        "We talked of the side show in the circus.",
        "Use a pencil to write the first draft.",
        "He ran half way to the hardware store.",
        "The clock struck to mark the third period.",
        "A small creek cut across the field.",
        "Cars and busses stalled in snow drifts.",
        "The set of china hit the floor with a crash.",
        "This is a grand season for hikes on the road.",
        "The dune rose from the edge of the water.",
        "Those words were the cue for the actor to leave.",
    ),
    (
        "A yacht slid around the point into the bay.",
        "The two met while playing on the sand.",
        "The ink stain dried on the finished page.",
        "The walled town was seized without a fight.",
        "The lease ran out in sixteen weeks.",
        "A tame squirrel makes a nice pet.",
        "The horn of the car woke the sleeping cop.",
        "The heart beat strongly and with firm strokes.",
        "The pearl was worn in a thin silver ring.",
        "The fruit peel was cut in thick slices.",
    ),
)


EVAL_LISTS = (1, 2, 3, 4)
CALIB_LISTS = (5, 6, 7, 8)


def harvard_sentences(lists: tuple[int, ...] = EVAL_LISTS) -> list[tuple[str, str]]:
    """(id, sentence) pairs of the given lists (1-based); ids are `hLL-SS` for list LL, sentence SS."""
    return [(f"h{li:02d}-{si:02d}", text)
            for li in lists
            for si, text in enumerate(HARVARD_LISTS[li - 1], 1)]
